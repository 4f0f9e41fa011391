using ModelCompression.Calibration;
using ModelCompression.Numerics;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Onnx;
using ModelCompression.Passes;

namespace ModelCompression.LowRank;

/// <summary>
/// One layer's low-rank form: what it costs at given ranks (one rank per mode), the spectra the ranks are chosen
/// from, and the graph rewrite. The spectra live in the metric the factorization minimizes: the weight's own
/// (plain) or the layer's outputs on calibration data (activation-aware, when an <see cref="InputMetric"/> is given).
/// </summary>
internal abstract class LayerFactorization
{
    /// <summary>Factorize only when the factors hold at most this fraction of the dense weight: above it the extra node and the approximation error buy too little.</summary>
    public const double MaxParameterFraction = 0.8;

    private readonly Func<double[]> _readWeight;
    private double[]? _weight;
    private IReadOnlyList<double[]>? _keptSpectra;

    /// <param name="readWeight">Reads W (see <see cref="Weight"/>): called when the layer is decomposed, so a factorization waiting its turn holds no copy.</param>
    protected LayerFactorization(WeightedLayer layer, Func<double[]> readWeight)
    {
        Layer = layer;
        _readWeight = readWeight;
    }

    public WeightedLayer Layer { get; }
    /// <summary>W as [out, in·K] doubles (K = kernel positions; 1 for Gemm/MatMul), read on first use and held until <see cref="Release"/>.</summary>
    protected double[] Weight => _weight ??= _readWeight();
    /// <summary>Whether <see cref="Decompose"/> ran since the last <see cref="Release"/>.</summary>
    public bool IsDecomposed { get; private set; }
    /// <summary>Report name of the decomposition ("svd", "tucker2", "spatial").</summary>
    public abstract string Technique { get; }
    /// <summary>The largest useful rank of each mode.</summary>
    public abstract int[] FullRanks { get; }
    /// <summary>Where the features the activation-aware metric whitens are in the layer input.</summary>
    public abstract FeatureAxis Axis { get; }
    /// <summary>How many features the whitening covers (in features, or input channels).</summary>
    public abstract int InputFeatures { get; }
    /// <summary>Weights of the factors at these ranks.</summary>
    public abstract long Parameters(int[] ranks);
    /// <summary>
    /// Per mode, the share of the (possibly whitened) weight's energy each additional rank keeps, descending; the
    /// sum over a mode is 1. Known only up to the rank asked for when the decomposition was randomized. After a
    /// <see cref="Release"/> that kept them, those of the last decomposition.
    /// </summary>
    public IReadOnlyList<double[]> ModeEnergies => IsDecomposed ? Energies : _keptSpectra ?? throw new InvalidOperationException($"'{Layer.Name}' has no spectrum: not decomposed");

    /// <summary><see cref="ModeEnergies"/> of the current decomposition.</summary>
    protected abstract IReadOnlyList<double[]> Energies { get; }

    /// <summary>
    /// Convolution ranks move in blocks of this many channels: ONNX Runtime's CPU convolutions run in a blocked
    /// channel layout (NCHWc: 16 channels per block with AVX-512, 8 with AVX2), and channel counts off the block
    /// leave that path. Measured on the ResNet: Tucker-2 at 0.6 of full rank ran 1.2–2× slower than the original
    /// with ranks like 19/38/77, and 0.59× with ranks rounded to multiples of 16.
    /// </summary>
    public const int ChannelBlock = 16;

    /// <summary>How far apart the ranks of a mode are: 1, or <see cref="ChannelBlock"/> for a convolution channel mode with room for two blocks.</summary>
    public int RankStep(int mode) => Layer.Layout == WeightLayout.Convolution && FullRanks[mode] >= 2 * ChannelBlock ? ChannelBlock : 1;

    /// <summary>Ranks brought into the range each mode supports and onto its <see cref="RankStep"/> (nearest step, ties up; the full rank always allowed).</summary>
    public virtual int[] Clamp(int[] ranks) => ranks.Select((r, mode) => Aligned(r, mode)).ToArray();

    protected int Aligned(int rank, int mode)
    {
        var step = RankStep(mode);
        var full = FullRanks[mode];
        var aligned = (rank + step / 2) / step * step;
        return Math.Clamp(aligned >= full ? full : aligned, Math.Min(step, full), full);
    }

    /// <summary>Decomposes W in its own metric, or in the metric of its inputs when <paramref name="metric"/> is given; <paramref name="fixedRanks"/> allows a randomized SVD.</summary>
    public void Decompose(InputMetric? metric, int[]? fixedRanks, int seed)
    {
        Factorize(metric, fixedRanks, seed);
        IsDecomposed = true;
    }

    /// <summary>The decomposition itself (see <see cref="Decompose"/>); what it keeps, <see cref="Forget"/> drops.</summary>
    protected abstract void Factorize(InputMetric? metric, int[]? fixedRanks, int seed);

    /// <summary>Drops the decomposition's working state (factors, whitening).</summary>
    protected abstract void Forget();

    /// <summary>
    /// Drops W and the decomposition (the shape-only members still answer), keeping the spectra when asked: a
    /// large model's layers hold only what rank allocation needs until their turn comes to be decomposed again.
    /// </summary>
    public void Release(bool keepSpectra)
    {
        _keptSpectra = keepSpectra ? ModeEnergies : null;
        _weight = null;
        Forget();
        IsDecomposed = false;
    }

    /// <summary>Replaces the layer by its factors at <paramref name="ranks"/> (already clamped); returns W′ in the [out, in·K] layout of <see cref="Weight"/>.</summary>
    public abstract double[] Rewrite(OnnxGraph graph, int[] ranks);

    /// <summary>
    /// Multiply-adds per output position of the factors at these ranks (a step that runs at the input resolution of
    /// a strided conv counts the extra positions); the dense layer's are <see cref="DenseParameters"/>.
    /// </summary>
    public virtual long MultiplyAdds(int[] ranks) => Parameters(ranks);

    public long DenseParameters => Layer.Parameters;
    public bool Saves(int[] ranks) => WhyNotWorthIt(ranks) is null;

    /// <summary>Why factors at these ranks do not pay (too many weights, or no multiply-adds saved), or null when they do.</summary>
    public string? WhyNotWorthIt(int[] ranks)
    {
        if (Parameters(ranks) > MaxParameterFraction * DenseParameters)
            return string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"the factors hold {Parameters(ranks):N0} weights, more than {MaxParameterFraction:0.##} of the {DenseParameters:N0} they replace");
        if (MultiplyAdds(ranks) >= DenseParameters)
            return string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"the factors take {MultiplyAdds(ranks):N0} multiply-adds per output position, no fewer than the {DenseParameters:N0} of the layer");
        return null;
    }

    /// <summary>Ranks for a ratio or absolute rank, mode by mode.</summary>
    public int[] RanksFor(Policy.RankSpec spec) => FullRanks.Select(spec.Resolve).ToArray();

    /// <summary>Per mode, the smallest rank (on the mode's step) whose spectrum keeps <paramref name="energy"/> of the total.</summary>
    public int[] RanksForEnergy(double energy) => ModeEnergies.Select((e, mode) =>
    {
        var kept = 0.0;
        for (var r = 0; r < e.Length; r++)
        {
            kept += e[r];
            if (kept < energy - 1e-12) continue;
            var step = RankStep(mode);
            return Math.Min((r + step) / step * step, FullRanks[mode]);
        }
        return FullRanks[mode];
    }).ToArray();

    /// <summary>
    /// Relative error of W′: ‖ΔW‖/‖W‖ without moments; with them, the output error on the calibration data against
    /// the original layer on its original inputs, ‖X̂·W′ᵀ − X·Wᵀ‖/‖X·Wᵀ‖ (X̂ = X unless paired; Conv: moments over
    /// input channels, summed over kernel positions).
    /// </summary>
    public double RelativeError(double[] reconstructed, InputMoments? moments)
    {
        if (moments is null)
        {
            var delta = new double[Weight.Length];
            for (var i = 0; i < delta.Length; i++) delta[i] = Weight[i] - reconstructed[i];
            var total = DenseMath.SquaredNorm(Weight);
            return total > 0 ? Math.Sqrt(DenseMath.SquaredNorm(delta) / total) : 0;
        }
        var w = FeaturesLast(Weight, moments.Features);
        var approx = FeaturesLast(reconstructed, moments.Features);
        var reference = Form(w, moments.ReferenceSum ?? moments.Sum, w, moments.Features);
        var error = Form(approx, moments.Sum, approx, moments.Features) - 2 * Form(approx, moments.Cross ?? moments.Sum, w, moments.Features) + reference;
        return reference > 0 ? Math.Sqrt(Math.Max(0, error) / reference) : 0;
    }

    /// <summary>[out, features·K] → [(out, K), features]: one row per output and kernel position (W itself when K = 1; only read).</summary>
    private double[] FeaturesLast(double[] w, int features)
    {
        var positions = w.Length / (Layer.OutFeatures * features);
        if (positions == 1) return w;
        var rows = new double[w.Length];
        for (var o = 0; o < Layer.OutFeatures; o++)
            for (var i = 0; i < features; i++)
                for (var s = 0; s < positions; s++)
                    rows[((long)o * positions + s) * features + i] = w[((long)o * features + i) * positions + s];
        return rows;
    }

    /// <summary>
    /// Σ over rows of a·S·bᵀ: row by row (the product a·S of a wide layer is as large as its weight), each row of
    /// a·S summed as <see cref="DenseMath.Multiply"/> does, the rows' terms added in order.
    /// </summary>
    private static double Form(double[] a, double[] s, double[] b, int n)
    {
        var rows = a.Length / n;
        var terms = new double[rows];
        DenseMath.ForRows(rows, (long)n * n, r =>
        {
            var row = new double[n];
            for (var p = 0; p < n; p++)
            {
                var arp = a[(long)r * n + p];
                if (arp != 0) DenseMath.Axpy(arp, s.AsSpan(p * n, n), row);
            }
            terms[r] = DenseMath.Dot(row, b.AsSpan(r * n, n));
        });
        var sum = 0.0;
        for (var r = 0; r < rows; r++) sum += terms[r];
        return sum;
    }

    /// <summary>
    /// From the SVD of M·T: E = U·√Σ [rows, r] and R = √Σ·Vᵀ·L⁻¹ [r, cols] (no L without a metric), so M ≈ E·R.
    /// The singular values split evenly, so both factors keep similar ranges (friendlier to a later int8 pass).
    /// </summary>
    protected static (double[] Expand, double[] Reduce) BalancedFactors(TruncatedSvd svd, double[]? whitening, int rank)
    {
        int rows = svd.Rows, cols = svd.Cols;
        var root = svd.SingularValues.Take(rank).Select(Math.Sqrt).ToArray();
        var expand = TruncatedSvd.Columns(svd.U, rows, svd.Known, rank);
        var reduceT = TruncatedSvd.Columns(svd.V, cols, svd.Known, rank); // [cols, r]
        for (var i = 0; i < rows; i++) for (var j = 0; j < rank; j++) expand[(long)i * rank + j] *= root[j];
        for (var i = 0; i < cols; i++) for (var j = 0; j < rank; j++) reduceT[(long)i * rank + j] *= root[j];
        if (whitening is not null) reduceT = DenseMath.SolveLowerTransposed(whitening, reduceT, cols, rank);
        return (expand, DenseMath.Transpose(reduceT, cols, rank));
    }

    /// <summary>Normalized energies σ²/Σσ² of a spectrum.</summary>
    protected static double[] Normalized(IEnumerable<double> squares, double total) =>
        squares.Select(s => total > 0 ? Math.Max(s, 0) / total : 0).ToArray();

    /// <summary>Adds a float initializer under a fresh name derived from <paramref name="baseName"/>.</summary>
    protected static string AddInitializer(OnnxGraph graph, string baseName, long[] dims, double[] values)
    {
        var name = graph.FreshName(baseName);
        graph.SetInitializer(Tensors.FromFloats(name, dims, values.Select(v => (float)v).ToArray()));
        return name;
    }

    /// <summary>Drops the replaced dense weight (and its graph-input entry, which old IR versions keep for initializers).</summary>
    protected void RemoveDenseWeight(OnnxGraph graph)
    {
        graph.RemoveInitializer(Layer.Weight.Name);
        for (var i = graph.Proto.Input.Count - 1; i >= 0; i--)
            if (graph.Proto.Input[i].Name == Layer.Weight.Name) graph.Proto.Input.RemoveAt(i);
        graph.Invalidate();
    }

    protected static NodeProto NewNode(string opType, string name, IEnumerable<string> inputs, params string[] outputs)
    {
        var node = new NodeProto { OpType = opType, Name = name };
        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs);
        return node;
    }

    protected static AttributeProto Ints(string name, IEnumerable<long> values)
    {
        var attribute = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        attribute.Ints.AddRange(values);
        return attribute;
    }

    protected static long[] IntsOf(NodeProto node, string name, long[] fallback) =>
        node.Attribute.FirstOrDefault(a => a.Name == name) is { } a && a.Ints.Count > 0 ? a.Ints.ToArray() : fallback;

    protected static string? StringOf(NodeProto node, string name) =>
        node.Attribute.FirstOrDefault(a => a.Name == name) is { } a ? a.S.ToStringUtf8() : null;
}
