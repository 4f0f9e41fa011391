using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;

namespace ModelCompression.Pruning;

/// <summary>
/// A weighted layer seen as the affine map y = A·x + c over its [in] features, with Gemm's alpha and beta folded in
/// (A = alpha·W, c = beta·C), so fits on calibration data can move weights and bias together and write them back.
/// </summary>
internal sealed class AffineLayer
{
    private AffineLayer(WeightedLayer layer, float alpha, float beta)
    {
        Layer = layer;
        Alpha = alpha;
        Beta = beta;
    }

    public WeightedLayer Layer { get; }
    private float Alpha { get; }
    private float Beta { get; }

    /// <summary>The layer's affine view, or null when it cannot carry a per-output bias (MatMul, a Gemm C that is not per output).</summary>
    public static AffineLayer? From(OnnxGraph graph, WeightedLayer layer)
    {
        if (layer.Layout == WeightLayout.Convolution) return new AffineLayer(layer, 1, 1);
        if (layer.Layout != WeightLayout.Gemm) return null;
        var alpha = layer.Node.Attribute.FirstOrDefault(a => a.Name == "alpha")?.F ?? 1f;
        var beta = layer.Node.Attribute.FirstOrDefault(a => a.Name == "beta")?.F ?? 1f;
        if (alpha == 0) return null;
        if (layer.BiasName is { } c && graph.Initializer(c) is { } bias)
        {
            var count = Tensors.ElementCount(bias);
            if (count != 1 && count != layer.OutFeatures) return null;
        }
        else if (layer.BiasName is not null) return null; // C computed at run time
        return new AffineLayer(layer, alpha, beta);
    }

    /// <summary>A as [out, in], row-major.</summary>
    public float[] ReadWeights(OnnxModel model)
    {
        var w = Layer.ReadMatrix(model);
        if (Alpha != 1) for (var i = 0; i < w.Length; i++) w[i] *= Alpha;
        return w;
    }

    /// <summary>c per output (zeros when the layer has no bias).</summary>
    public float[] ReadBias(OnnxGraph graph, OnnxModel model)
    {
        var bias = new float[Layer.OutFeatures];
        if (Layer.BiasName is not { } name || graph.Initializer(name) is not { } tensor) return bias;
        var stored = model.ReadFloats(tensor);
        for (var o = 0; o < bias.Length; o++) bias[o] = Beta * stored[stored.Length == 1 ? 0 : o];
        return bias;
    }

    /// <summary>Writes A (as [out, <paramref name="inFeatures"/>], which may differ from the layer's current size) and c.</summary>
    public void Write(OnnxGraph graph, float[] weights, float[] bias, int inFeatures)
    {
        LayerWeights.Write(graph, Layer, Alpha == 1 ? weights : Array.ConvertAll(weights, x => x / Alpha), bias.Length, inFeatures);
        var node = Layer.Node;
        var name = Layer.BiasName is { } existing && graph.Initializer(existing) is not null && graph.Consumers(existing).Count == 1
            ? existing
            : graph.FreshName(CompressionContext.LayerName(node) + "_bias");
        graph.SetInitializer(Tensors.FromFloats(name, [bias.Length], bias));
        while (node.Input.Count < 3) node.Input.Add("");
        node.Input[2] = name;
        if (node.OpType == "Gemm" && Beta != 1)
        {
            node.Attribute.Remove(node.Attribute.First(a => a.Name == "beta"));
            node.Attribute.Add(new AttributeProto { Name = "beta", Type = AttributeProto.Types.AttributeType.Float, F = 1 });
        }
        graph.Invalidate();
    }
}
