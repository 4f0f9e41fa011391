using ModelCompression.Calibration;
using ModelCompression.Numerics;
using ModelCompression.Onnx;
using ModelCompression.Passes;

namespace ModelCompression.LowRank;

/// <summary>
/// Spatial separation of a 2-D Conv kernel W [out, in, kh, kw] into a kh×1 conv (in → r) and a 1×kw conv (r → out)
/// (Jaderberg et al. 2014, scheme 2): the SVD of W rearranged as M[(out, kw), (in, kh)]. The vertical conv takes
/// the height part of pads/strides/dilations, the horizontal one the width part and the bias; auto_pad applies
/// per axis, so both keep it. Activation-aware: the (in, kh) side is whitened by the input channel moments ⊗ I.
/// </summary>
internal sealed class SpatialFactorization(WeightedLayer layer, Func<double[]> readWeight) : LayerFactorization(layer, readWeight)
{
    private TruncatedSvd? _svd;
    private double[]? _whitening;

    private int Out => Layer.OutFeatures;
    private int In => checked((int)Layer.WeightShape[1]);
    private int KernelHeight => checked((int)Layer.WeightShape[2]);
    private int KernelWidth => checked((int)Layer.WeightShape[3]);
    private int Rows => Out * KernelWidth;
    private int Cols => In * KernelHeight;

    public override string Technique => "spatial";
    public override int[] FullRanks => [Math.Min(Rows, Cols)];
    public override FeatureAxis Axis => FeatureAxis.Channel;
    public override int InputFeatures => In;
    public override long Parameters(int[] ranks) => (long)ranks[0] * (Rows + Cols);
    /// <summary>The vertical step keeps the input width: the horizontal stride multiplies its positions.</summary>
    public override long MultiplyAdds(int[] ranks) => (long)ranks[0] * (Rows + Cols * IntsOf(Layer.Node, "strides", [1, 1])[1]);

    protected override IReadOnlyList<double[]> Energies => [Normalized(_svd!.SingularValues.Select(s => s * s), _svd.TotalEnergy)];

    protected override void Factorize(InputMetric? metric, int[]? fixedRanks, int seed)
    {
        var m = new double[(long)Rows * Cols];
        int kh = KernelHeight, kw = KernelWidth;
        for (var o = 0; o < Out; o++)
            for (var i = 0; i < In; i++)
                for (var h = 0; h < kh; h++)
                    for (var w = 0; w < kw; w++)
                        m[(long)(o * kw + w) * Cols + i * kh + h] = Weight[(((long)o * In + i) * kh + h) * kw + w];
        _whitening = null;
        if (metric is not null)
        {
            // ⊗ I_kh: kernel rows see the same channel statistics and are taken as uncorrelated.
            _whitening = WithKernelRows(metric.Whitening);
            m = DenseMath.Multiply(m, WithKernelRows(metric.Transform), Rows, Cols, Cols);
        }
        _svd = fixedRanks is [var rank] && MatrixFactorization.UseRandomized(Rows, Cols, rank)
            ? TruncatedSvd.Randomized(m, Rows, Cols, rank, seed)
            : TruncatedSvd.Exact(m, Rows, Cols);
    }

    protected override void Forget()
    {
        _svd = null;
        _whitening = null;
    }

    /// <summary>A channel matrix ⊗ I_kh, indexed by (channel, kernel row) on both sides.</summary>
    private double[] WithKernelRows(double[] channels)
    {
        var kh = KernelHeight;
        var result = new double[(long)Cols * Cols];
        for (var i = 0; i < In; i++)
            for (var j = 0; j < In; j++)
                for (var h = 0; h < kh; h++)
                    result[(long)(i * kh + h) * Cols + j * kh + h] = channels[(long)i * In + j];
        return result;
    }

    public override double[] Rewrite(OnnxGraph graph, int[] ranks)
    {
        var rank = Math.Min(ranks[0], _svd!.Known);
        var (horizontal, vertical) = BalancedFactors(_svd, _whitening, rank); // [(out, kw), r], [r, (in, kh)]
        int kh = KernelHeight, kw = KernelWidth;
        var node = Layer.Node;
        var name = CompressionContext.LayerName(node);
        var weightName = Layer.Weight.Name;

        var horizontalWeight = new double[(long)Out * rank * kw]; // [out, r, 1, kw]
        for (var o = 0; o < Out; o++)
            for (var a = 0; a < rank; a++)
                for (var w = 0; w < kw; w++)
                    horizontalWeight[((long)o * rank + a) * kw + w] = horizontal[(long)(o * kw + w) * rank + a];

        var pads = IntsOf(node, "pads", [0, 0, 0, 0]);
        var strides = IntsOf(node, "strides", [1, 1]);
        var dilations = IntsOf(node, "dilations", [1, 1]);
        var autoPad = StringOf(node, "auto_pad");
        var explicitPads = autoPad is null or "" or "NOTSET";

        var separated = graph.FreshName(name + "_spatial_vertical");
        var verticalNode = NewNode("Conv", graph.FreshName(name + "/spatial_vertical"),
            [node.Input[0], AddInitializer(graph, weightName + ".spatial_vertical", [rank, In, kh, 1], vertical)], separated);
        verticalNode.Attribute.Add(Ints("kernel_shape", [kh, 1]));
        verticalNode.Attribute.Add(Ints("strides", [strides[0], 1]));
        verticalNode.Attribute.Add(Ints("dilations", [dilations[0], 1]));
        var horizontalNode = NewNode("Conv", node.Name,
            [separated, AddInitializer(graph, weightName + ".spatial_horizontal", [Out, rank, 1, kw], horizontalWeight), .. node.Input.Skip(2)], [.. node.Output]);
        horizontalNode.Attribute.Add(Ints("kernel_shape", [1, kw]));
        horizontalNode.Attribute.Add(Ints("strides", [1, strides[1]]));
        horizontalNode.Attribute.Add(Ints("dilations", [1, dilations[1]]));
        if (explicitPads)
        {
            // ONNX pads are [h_begin, w_begin, h_end, w_end].
            verticalNode.Attribute.Add(Ints("pads", [pads[0], 0, pads[2], 0]));
            horizontalNode.Attribute.Add(Ints("pads", [0, pads[1], 0, pads[3]]));
        }
        else
        {
            foreach (var n in new[] { verticalNode, horizontalNode })
                n.Attribute.Add(new Onnx.Protobuf.AttributeProto { Name = "auto_pad", Type = Onnx.Protobuf.AttributeProto.Types.AttributeType.String, S = Google.Protobuf.ByteString.CopyFromUtf8(autoPad!) });
        }
        graph.ReplaceNode(node, verticalNode, horizontalNode);
        RemoveDenseWeight(graph);

        var product = DenseMath.Multiply(horizontal, vertical, Rows, rank, Cols);
        var reconstructed = new double[Weight.Length];
        for (var o = 0; o < Out; o++)
            for (var i = 0; i < In; i++)
                for (var h = 0; h < kh; h++)
                    for (var w = 0; w < kw; w++)
                        reconstructed[(((long)o * In + i) * kh + h) * kw + w] = product[(long)(o * kw + w) * Cols + i * kh + h];
        return reconstructed;
    }
}
