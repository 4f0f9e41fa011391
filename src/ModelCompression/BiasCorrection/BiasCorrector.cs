using ModelCompression.Calibration;
using ModelCompression.Passes;
using ModelCompression.Runtime;

namespace ModelCompression.BiasCorrection;

/// <summary>
/// Per-feature means of layer inputs on calibration data, folded in batch by batch (memory: one double per feature).
/// Conv inputs are averaged per channel (axis 1) over batch and positions; Gemm/MatMul inputs over every leading index.
/// </summary>
public sealed class InputMeans
{
    private readonly Dictionary<string, (bool Channel, double[]? Sum, long Count)> _tensors = new(StringComparer.Ordinal);

    /// <summary>Asks for the means of the input of each layer (Conv: per channel; Gemm/MatMul: per last-axis feature).</summary>
    public InputMeans(IEnumerable<WeightedLayer> layers)
    {
        foreach (var layer in layers)
            _tensors.TryAdd(Key(layer), (layer.Layout == WeightLayout.Convolution, null, 0));
    }

    private static string Key(WeightedLayer layer) => (layer.Layout == WeightLayout.Convolution ? "c:" : "l:") + layer.InputName;

    public void Add(string tensor, FloatTensor batch)
    {
        foreach (var key in new[] { "c:" + tensor, "l:" + tensor })
        {
            if (!_tensors.TryGetValue(key, out var entry)) continue;
            var shape = batch.Shape;
            if (shape.Length == 0 || (entry.Channel && shape.Length < 2)) continue;
            var features = checked((int)(entry.Channel ? shape[1] : shape[^1]));
            var sum = entry.Sum ?? new double[features];
            if (sum.Length != features) continue;
            var data = batch.Data;
            if (entry.Channel)
            {
                var items = checked((int)shape[0]);
                var positions = data.Length / Math.Max(1, items * features);
                for (var n = 0; n < items; n++)
                    for (var c = 0; c < features; c++)
                    {
                        double s = 0;
                        foreach (var v in data.AsSpan((n * features + c) * positions, positions)) s += v;
                        sum[c] += s;
                    }
                _tensors[key] = (true, sum, entry.Count + (long)items * positions);
            }
            else
            {
                var rows = data.Length / features;
                for (var r = 0; r < rows; r++)
                    for (var f = 0; f < features; f++) sum[f] += data[r * features + f];
                _tensors[key] = (false, sum, entry.Count + rows);
            }
        }
    }

    /// <summary>E[x] per feature of the layer's input, or null when it was not measured.</summary>
    public double[]? Of(WeightedLayer layer) =>
        _tensors.TryGetValue(Key(layer), out var entry) && entry.Sum is { } sum && entry.Count > 0 ? sum.Select(s => s / entry.Count).ToArray() : null;
}

/// <summary>The arithmetic of analytical bias correction (as in AIMET's and NNCF's bias correction).</summary>
public static class BiasCorrector
{
    /// <summary>
    /// Δb[o] = −Σᵢ (Ŵ[o,i] − W[o,i])·E[x_i] for a row-major [out, in] matrix. For a Conv, column i of the im2col row
    /// reads input channel i / kernel-size of the output's group, and E[x_i] is that channel's mean, the same at every
    /// kernel offset: zero padding makes border patches see a little less, which this standard approximation ignores.
    /// </summary>
    public static float[] Delta(WeightedLayer layer, ReadOnlySpan<float> weights, ReadOnlySpan<float> quantized, double[] means)
    {
        int outFeatures = layer.OutFeatures, inFeatures = layer.InFeatures;
        var delta = new float[outFeatures];
        var conv = layer.Layout == WeightLayout.Convolution;
        var inPerGroup = conv ? (int)layer.WeightShape[1] : inFeatures;
        var kernel = conv ? inFeatures / inPerGroup : 1;
        var outPerGroup = conv ? Math.Max(1, outFeatures / (int)layer.Group) : outFeatures;
        for (var o = 0; o < outFeatures; o++)
        {
            var first = conv ? o / outPerGroup * inPerGroup : 0;
            double shift = 0;
            for (var i = 0; i < inFeatures; i++)
            {
                var channel = first + i / kernel;
                shift += ((double)quantized[o * inFeatures + i] - weights[o * inFeatures + i]) * means[channel];
            }
            delta[o] = (float)-shift;
        }
        return delta;
    }

    /// <summary>‖Δb‖/‖b‖ for the report (‖Δb‖ alone, as an absolute, when the bias is all zeros).</summary>
    public static double RelativeSize(ReadOnlySpan<float> bias, ReadOnlySpan<float> delta)
    {
        double d = 0, b = 0;
        for (var o = 0; o < delta.Length; o++) { d += (double)delta[o] * delta[o]; b += (double)bias[o] * bias[o]; }
        return b > 0 ? Math.Sqrt(d / b) : Math.Sqrt(d);
    }
}
