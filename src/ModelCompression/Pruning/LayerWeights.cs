using ModelCompression.Onnx;
using ModelCompression.Passes;

namespace ModelCompression.Pruning;

/// <summary>Writes a layer's weight back with new output/input sizes, in the layer's own layout (structured pruning changes shapes).</summary>
internal static class LayerWeights
{
    /// <param name="outIn">The new weight as a row-major [<paramref name="outFeatures"/>, <paramref name="inFeatures"/>] matrix (in the im2col order for Conv).</param>
    public static void Write(OnnxGraph graph, WeightedLayer layer, float[] outIn, int outFeatures, int inFeatures)
    {
        var old = layer.WeightShape;
        long[] dims;
        float[] stored;
        if (layer.Layout == WeightLayout.Convolution)
        {
            var kernel = old.Skip(2).Aggregate(1L, (a, b) => a * b);
            dims = [outFeatures, inFeatures / kernel, .. old.Skip(2)];
            stored = outIn;
        }
        else if (layer.StoredOutIn)
        {
            dims = [outFeatures, inFeatures];
            stored = outIn;
        }
        else
        {
            dims = [inFeatures, outFeatures];
            stored = WeightedLayer.Transpose(outIn, outFeatures, inFeatures);
        }
        graph.SetInitializer(Tensors.FromFloats(layer.Weight.Name, dims, stored));
    }
}
