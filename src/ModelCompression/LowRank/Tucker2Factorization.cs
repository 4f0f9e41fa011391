using ModelCompression.Calibration;
using ModelCompression.Numerics;
using ModelCompression.Onnx;
using ModelCompression.Passes;

namespace ModelCompression.LowRank;

/// <summary>
/// Tucker-2 of a Conv kernel W [out, in, k…] ≈ core ×₀ U_out ×₁ U_in: a 1×1 conv reduces the input channels to
/// r_in, a k×k core conv (the original kernel, pads, strides, dilations) maps r_in → r_out, and a 1×1 conv expands
/// to the output channels with the original bias (Kim et al. 2016). U_out, U_in start from the HOSVD (leading left
/// singular vectors of the two channel unfoldings) and are refined by HOOI sweeps. Activation-aware: the input
/// channel mode is whitened by the channel second moment of the layer input (treating kernel positions as
/// uncorrelated), so the reduce step keeps the channel mixes the data actually excites.
/// </summary>
internal sealed class Tucker2Factorization(WeightedLayer layer, Func<double[]> readWeight) : LayerFactorization(layer, readWeight)
{
    /// <summary>Alternating refinements of the two factors after the HOSVD start (each a pair of small SVDs).</summary>
    private const int HooiSweeps = 2;

    private double[]? _whitening;
    private double[] _whitened = [];
    private TruncatedSvd? _outMode;
    private TruncatedSvd? _inMode;

    private int Out => Layer.OutFeatures;
    private int In => checked((int)Layer.WeightShape[1]);
    private int Positions => Layer.InFeatures / In;

    public override string Technique => "tucker2";
    /// <summary>(r_out, r_in): an unfolding's rank bounds each.</summary>
    public override int[] FullRanks => [Math.Min(Out, In * Positions), Math.Min(In, Out * Positions)];
    public override FeatureAxis Axis => FeatureAxis.Channel;
    public override int InputFeatures => In;
    public override long Parameters(int[] ranks) => (long)ranks[1] * In + (long)ranks[0] * ranks[1] * Positions + (long)Out * ranks[0];
    /// <summary>The reduce step runs before the core's strides, at every input position.</summary>
    public override long MultiplyAdds(int[] ranks) =>
        (long)ranks[1] * In * IntsOf(Layer.Node, "strides", []).Aggregate(1L, (a, b) => a * b) + (long)ranks[0] * ranks[1] * Positions + (long)Out * ranks[0];

    protected override IReadOnlyList<double[]> Energies =>
    [
        Normalized(_outMode!.SingularValues.Select(s => s * s), _outMode.TotalEnergy),
        Normalized(_inMode!.SingularValues.Select(s => s * s), _inMode.TotalEnergy),
    ];

    protected override void Factorize(InputMetric? metric, int[]? fixedRanks, int seed)
    {
        _whitening = metric?.Whitening;
        _whitened = metric is null ? Weight : FromRows(DenseMath.Multiply(ToRows(Weight, In), metric.Transform, Out * Positions, In, In), In);
        _outMode = TruncatedSvd.Exact(_whitened, Out, In * Positions);
        _inMode = TruncatedSvd.Exact(InChannelUnfolding(_whitened, In), In, Out * Positions);
    }

    protected override void Forget()
    {
        _whitening = null;
        _whitened = [];
        _outMode = null;
        _inMode = null;
    }

    public override double[] Rewrite(OnnxGraph graph, int[] ranks)
    {
        var (rOut, rIn) = (ranks[0], ranks[1]);
        var uOut = TruncatedSvd.Columns(_outMode!.U, Out, _outMode.Known, rOut);
        var uIn = TruncatedSvd.Columns(_inMode!.U, In, _inMode.Known, rIn);
        for (var sweep = 0; sweep < HooiSweeps; sweep++)
        {
            var projectedOut = ProjectOut(_whitened, uOut, rOut, In); // [r_out, in·K]
            var inSvd = TruncatedSvd.Exact(InChannelUnfolding(projectedOut, rOut), In, rOut * Positions);
            uIn = TruncatedSvd.Columns(inSvd.U, In, inSvd.Known, rIn);
            var projectedIn = FromRows(DenseMath.Multiply(ToRows(_whitened, In), uIn, Out * Positions, In, rIn), rIn); // [out, r_in·K]
            var outSvd = TruncatedSvd.Exact(projectedIn, Out, rIn * Positions);
            uOut = TruncatedSvd.Columns(outSvd.U, Out, outSvd.Known, rOut);
        }
        // core = W̃ ×₀ U_outᵀ ×₁ U_inᵀ, [r_out, r_in, K]
        var core = FromRows(DenseMath.Multiply(ToRows(ProjectOut(_whitened, uOut, rOut, In), In), uIn, rOut * Positions, In, rIn), rIn);
        // Un-whiten the reduce step: the channel mode was truncated in the metric of L, so R = U_inᵀ·L⁻¹ [r_in, in].
        var reduceT = _whitening is null ? uIn : DenseMath.SolveLowerTransposed(_whitening, uIn, In, rIn);
        var reduce = DenseMath.Transpose(reduceT, In, rIn);

        var node = Layer.Node;
        var name = CompressionContext.LayerName(node);
        var weightName = Layer.Weight.Name;
        var kernel = Layer.WeightShape[2..];
        var ones = Enumerable.Repeat(1L, kernel.Length).ToArray();
        var reduced = graph.FreshName(name + "_tucker_reduced");
        var mixed = graph.FreshName(name + "_tucker_core");
        var reduceNode = NewNode("Conv", graph.FreshName(name + "/tucker_reduce"), [node.Input[0], AddInitializer(graph, weightName + ".tucker_reduce", [rIn, In, .. ones], reduce)], reduced);
        reduceNode.Attribute.Add(Ints("kernel_shape", ones));
        var coreNode = NewNode("Conv", graph.FreshName(name + "/tucker_core"), [reduced, AddInitializer(graph, weightName + ".tucker_core", [rOut, rIn, .. kernel], core)], mixed);
        coreNode.Attribute.AddRange(node.Attribute.Select(a => a.Clone()));
        var expandNode = NewNode("Conv", node.Name, [mixed, AddInitializer(graph, weightName + ".tucker_expand", [Out, rOut, .. ones], uOut), .. node.Input.Skip(2)], [.. node.Output]);
        expandNode.Attribute.Add(Ints("kernel_shape", ones));
        graph.ReplaceNode(node, reduceNode, coreNode, expandNode);
        RemoveDenseWeight(graph);

        // W′ = core ×₀ U_out ×₁ Rᵀ, back in the [out, in·K] layout.
        var expanded = DenseMath.Multiply(uOut, core, Out, rOut, rIn * Positions); // [out, r_in·K]
        return FromRows(DenseMath.Multiply(ToRows(expanded, rIn), reduce, Out * Positions, rIn, In), In);
    }

    /// <summary>A core [r_out, r_in, K] cannot use more rank in one mode than the other two modes span.</summary>
    public override int[] Clamp(int[] ranks)
    {
        var rIn = Aligned(ranks[1], 1);
        var rOut = Math.Min(Aligned(ranks[0], 0), rIn * Positions);
        return [rOut, Math.Min(rIn, rOut * Positions)];
    }

    /// <summary>U_outᵀ·W [r, channels·K] for W [out, channels·K].</summary>
    private double[] ProjectOut(double[] w, double[] uOut, int rOut, int channels) =>
        DenseMath.Multiply(DenseMath.Transpose(uOut, Out, rOut), w, rOut, Out, channels * Positions);

    /// <summary>[a, c, K] → [(a, K), c]: channels last, so a channel-mode product is one matrix product.</summary>
    private double[] ToRows(double[] w, int channels)
    {
        var leading = w.Length / (channels * Positions);
        var rows = new double[w.Length];
        for (var a = 0; a < leading; a++)
            for (var c = 0; c < channels; c++)
                for (var s = 0; s < Positions; s++)
                    rows[((long)a * Positions + s) * channels + c] = w[((long)a * channels + c) * Positions + s];
        return rows;
    }

    /// <summary>Inverse of <see cref="ToRows"/>: [(a, K), c] → [a, c, K].</summary>
    private double[] FromRows(double[] rows, int channels)
    {
        var leading = rows.Length / (channels * Positions);
        var w = new double[rows.Length];
        for (var a = 0; a < leading; a++)
            for (var c = 0; c < channels; c++)
                for (var s = 0; s < Positions; s++)
                    w[((long)a * channels + c) * Positions + s] = rows[((long)a * Positions + s) * channels + c];
        return w;
    }

    /// <summary>The mode-1 unfolding [c, (a, K)] of a tensor [a, c, K].</summary>
    private double[] InChannelUnfolding(double[] w, int leading)
    {
        var channels = w.Length / (leading * Positions);
        var unfolded = new double[w.Length];
        for (var a = 0; a < leading; a++)
            for (var c = 0; c < channels; c++)
                Array.Copy(w, ((long)a * channels + c) * Positions, unfolded, ((long)c * leading + a) * Positions, Positions);
        return unfolded;
    }
}
