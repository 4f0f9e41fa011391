using ModelCompression.Calibration;
using ModelCompression.Numerics;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Onnx;
using ModelCompression.Passes;

namespace ModelCompression.LowRank;

/// <summary>
/// Truncated SVD of a Gemm/MatMul weight (or a 1×1 Conv) W [out, in] ≈ E·R, rank r: the layer becomes a reduce
/// step x·Rᵀ (in → r) followed by the original node with weight E (r → out), which keeps the bias and attributes.
/// Activation-aware: the SVD is taken of W·L, where L·Lᵀ is the damped input second moment XᵀX, and R is un-whitened
/// (R = √Σ·Vᵀ·L⁻¹), so the kept rank minimizes ‖X·ΔWᵀ‖ instead of ‖ΔW‖ (SVD-LLM, Wang et al. 2024); see
/// <see cref="InputMetric"/> for the form that also absorbs upstream error.
/// </summary>
internal sealed class MatrixFactorization(WeightedLayer layer, Func<double[]> readWeight) : LayerFactorization(layer, readWeight)
{
    /// <summary>A randomized SVD pays off once the matrix is this large in both directions and the sketch is a small part of it.</summary>
    public const int RandomizedMinDimension = 1024;
    private TruncatedSvd? _svd;
    private double[]? _whitening;

    public override string Technique => "svd";
    public override int[] FullRanks => [Math.Min(Layer.OutFeatures, Layer.InFeatures)];
    public override FeatureAxis Axis => Layer.Layout == WeightLayout.Convolution ? FeatureAxis.Channel : FeatureAxis.Last;
    public override int InputFeatures => Layer.InFeatures;
    public override long Parameters(int[] ranks) => (long)ranks[0] * (Layer.OutFeatures + Layer.InFeatures);

    protected override IReadOnlyList<double[]> Energies =>
        [Normalized(_svd!.SingularValues.Select(s => s * s), _svd.TotalEnergy)];

    protected override void Factorize(InputMetric? metric, int[]? fixedRanks, int seed)
    {
        _whitening = metric?.Whitening;
        int m = Layer.OutFeatures, n = Layer.InFeatures;
        var target = metric is null ? Weight : DenseMath.Multiply(Weight, metric.Transform, m, n, n);
        _svd = fixedRanks is [var rank] && UseRandomized(m, n, rank)
            ? TruncatedSvd.Randomized(target, m, n, rank, seed)
            : TruncatedSvd.Exact(target, m, n);
    }

    protected override void Forget()
    {
        _svd = null;
        _whitening = null;
    }

    /// <summary>The sketch (rank + oversampling) must stay under a quarter of the smaller side for the randomized route to win.</summary>
    public static bool UseRandomized(int rows, int cols, int rank) => Math.Min(rows, cols) >= RandomizedMinDimension && 4 * (rank + 10) <= Math.Min(rows, cols);

    public override double[] Rewrite(OnnxGraph graph, int[] ranks)
    {
        var rank = Math.Min(ranks[0], _svd!.Known);
        var (expand, reduce) = BalancedFactors(_svd, _whitening, rank);
        int m = Layer.OutFeatures, n = Layer.InFeatures;
        var node = Layer.Node;
        var weightName = Layer.Weight.Name;
        var hidden = graph.FreshName(CompressionContext.LayerName(node) + "_lowrank");
        NodeProto reduceNode, expandNode;
        if (Layer.Layout == WeightLayout.Convolution)
        {
            var spatial = Layer.WeightShape.Length - 2;
            var ones = Enumerable.Repeat(1L, spatial).ToArray();
            // A strided or padded 1×1 conv: the reduce step takes stride and pads (fewer positions to expand).
            reduceNode = NewNode("Conv", graph.FreshName(CompressionContext.LayerName(node) + "/lowrank_reduce"), [node.Input[0], AddInitializer(graph, weightName + ".lowrank_reduce", [rank, n, .. ones], reduce)], hidden);
            reduceNode.Attribute.AddRange(node.Attribute.Select(a => a.Clone()));
            expandNode = NewNode("Conv", node.Name, [hidden, AddInitializer(graph, weightName + ".lowrank_expand", [m, rank, .. ones], expand), .. node.Input.Skip(2)], [.. node.Output]);
            expandNode.Attribute.Add(Ints("kernel_shape", ones));
        }
        else
        {
            reduceNode = NewNode("MatMul", graph.FreshName(CompressionContext.LayerName(node) + "/lowrank_reduce"),
                [node.Input[0], AddInitializer(graph, weightName + ".lowrank_reduce", [n, rank], DenseMath.Transpose(reduce, rank, n))], hidden);
            expandNode = node.Clone();
            expandNode.Input[0] = hidden;
            // The expand weight takes the layout of the original: [out, r] under Gemm transB=1, else [r, out].
            expandNode.Input[1] = Layer.StoredOutIn
                ? AddInitializer(graph, weightName + ".lowrank_expand", [m, rank], expand)
                : AddInitializer(graph, weightName + ".lowrank_expand", [rank, m], DenseMath.Transpose(expand, m, rank));
        }
        graph.ReplaceNode(node, reduceNode, expandNode);
        RemoveDenseWeight(graph);
        return DenseMath.Multiply(expand, reduce, m, rank, n);
    }
}
