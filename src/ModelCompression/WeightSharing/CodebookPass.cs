using Google.Protobuf;
using ModelCompression.Diagnostics;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using ModelCompression.Policy;
using static ModelCompression.Pruning.NodeBuilder;

namespace ModelCompression.WeightSharing;

/// <summary>
/// <c>Codebook=k</c>: weight sharing (Gong et al. 2014; Han et al., Deep Compression, 2016). Each Conv/Gemm/MatMul
/// weight's values are clustered by k-means into k shared values (<see cref="ScalarKMeans"/>); the weight is stored as
/// indices (uint8 of its own shape, or two 4-bit ones per byte for k ≤ 16, whichever Brotli codes smaller) plus the
/// float codebook, and a <c>Gather(codebook, Cast(indices))</c> (after unpacking) writes the
/// dense float weight under its old name. All inputs of those two nodes are constant, so ONNX Runtime folds them when
/// it loads the model and runs the dense result with its usual kernels: smaller files, the same speed.
/// Runs after quantization (layers it stored in int8 are left as they are) and before storage, which may store the
/// indices of a pruned layer sparse (exact zeros keep index 0).
/// </summary>
public sealed class CodebookPass : ICompressionPass
{
    public string Name => "codebook";
    // After pruning and low rank (which change the values to share) and after quantization (which owns the layers it
    // stores in int8), before clean-up and storage.
    public PassStage Stage => PassStage.Quantize + 5;
    public IReadOnlyList<OptionsGroup> Reads => [CodebookOptions.Group];
    public bool IsRequested(CompressionPolicy policy) => policy.Requests<CodebookOptions>();

    public void Apply(CompressionContext context)
    {
        var graph = context.Graph;
        RecordQuantizedLayers(context);
        var graphInputs = graph.GraphInputNames.ToHashSet(StringComparer.Ordinal);
        var targets = new List<(WeightedLayer Layer, int K, CodebookOptions Options)>();
        foreach (var layer in WeightedLayer.FindAll(graph))
        {
            context.Cancellation.ThrowIfCancellationRequested();
            var options = context.Options<CodebookOptions>(layer.Node);
            if (options.Codebook is not { } k) continue; // a policy-file entry asks for other layers only
            if (context.IsExcluded(layer.Node)) LeaveFloat(context, layer, "excluded by policy");
            else if (OpRegistry.WhyNot(layer.Node, OpTechnique.Codebook) is { } reason) LeaveFloat(context, layer, reason);
            else if (graphInputs.Contains(layer.Weight.Name) || layer.Graph.GraphInputNames.Contains(layer.Weight.Name)) LeaveFloat(context, layer, "the weight is also a graph input (it can be fed at run time)");
            else targets.Add((layer, k, options));
        }

        // Every layer's codebook first (data-aware ones stage by stage, each measured on the inputs the layers
        // already shared before it produce), then the stored forms.
        var fitted = new Dictionary<WeightedLayer, Fitted>();
        var dataAware = new List<(WeightedLayer Layer, int K, CodebookOptions Options)>();
        foreach (var target in targets)
        {
            var (layer, k, options) = target;
            var why = options.MethodFor(context.HasCalibration) != CodebookMethod.Gptq ? null
                : layer.InSubgraph ? WeightedLayer.SubgraphReason
                : layer.Layout == WeightLayout.Convolution && layer.Group != 1 ? "grouped conv (the input statistics need group=1)"
                : "";
            if (why == "") dataAware.Add(target);
            else fitted[layer] = Nearest(context, layer, k, options.CodebookIterations, Rate(layer, options, CodebookMethod.Nearest, k), why);
        }
        if (dataAware.Count > 0)
        {
            var capture = new Calibration.LayerCapture(context, Name);
            var stages = Calibration.LayerCapture.Stages(graph, dataAware.Select(t => t.Layer).ToList());
            foreach (var stage in stages.Distinct().Order())
            {
                context.Cancellation.ThrowIfCancellationRequested();
                var ready = dataAware.Where((_, i) => stages[i] == stage).ToList();
                var stats = capture.InputGrams(ready.Select(t => t.Layer).ToList());
                for (var i = 0; i < ready.Count; i++) fitted[ready[i].Layer] = DataAware(context, ready[i].Layer, ready[i].K, ready[i].Options.CodebookIterations, Rate(ready[i].Layer, ready[i].Options, CodebookMethod.Gptq, ready[i].K), stats[i]);
            }
        }
        var shared = 0;
        foreach (var (layer, k, _) in targets)
            if (Share(context, layer, k, fitted[layer])) shared++;
        if (shared == 0) context.Warn(DiagnosticCodes.NothingToCompress, "codebook: no Conv/Gemm/MatMul layer with a constant float weight got a smaller shared form");
    }

    /// <summary>
    /// CodebookRate (<see cref="CodebookOptions.RateFor"/>), except for layers of fewer than <see cref="SmallLayer"/>
    /// weights, which keep plain k-means: their indices take at most 2 KiB, so entropy coding saves a few hundred bytes
    /// there, and such layers are usually the most sensitive ones, the first conv and the head (ResNet 70 % + 16
    /// values: 93.05 % top-1 with the stem and the head at rate 0, 92.45 % with every layer at 4, the same 5.46 %
    /// Brotli size).
    /// </summary>
    private static double Rate(WeightedLayer layer, CodebookOptions options, CodebookMethod method, int k) => layer.Parameters < SmallLayer ? 0 : options.RateFor(method, k);

    private const long SmallLayer = 4096;

    /// <summary>
    /// A layer's codebook before it is stored: the weight as it was (stored order), the shared form (indices in
    /// stored order), how it was assigned, and the bias to write when the assignment corrected it.
    /// </summary>
    private sealed record Fitted(float[] Original, SharedWeights Result, string Method, double? OutputError, Action? Restore);

    private static Fitted Nearest(CompressionContext context, WeightedLayer layer, int k, int maxIterations, double rate, string? why)
    {
        var w = context.Model.ReadFloats(layer.Weight);
        // Pruned weights must stay exactly zero: they get a fixed entry of their own.
        var result = ScalarKMeans.Fit(w, k, maxIterations, keepZero: w.Any(x => x == 0), rate);
        return new Fitted(w, result, why is null ? "nearest" : $"nearest ({why})", null, null);
    }

    /// <summary>
    /// k-means, then <see cref="CodebookGptq"/> against the layer's input second moments (with the bias as a last
    /// column that absorbs the compensation where the layer has one); the result is written at once, so the next
    /// stages are measured on it.
    /// </summary>
    private static Fitted DataAware(CompressionContext context, WeightedLayer layer, int k, int maxIterations, double rate, Calibration.GramStatistics stats)
    {
        var original = context.Model.ReadFloats(layer.Weight);
        // Gemm's alpha would scale the shared values: such a layer is assigned without its bias.
        var affine = layer.OpType == "Gemm" && layer.Node.Attribute.Any(a => a.Name == "alpha" && a.F != 1) ? null : Pruning.AffineLayer.From(context.Graph, layer);
        var f = layer.InFeatures;
        var rows = layer.OutFeatures;
        var w = layer.ReadMatrix(context.Model);
        var keepZero = w.Any(x => x == 0);
        var initial = ScalarKMeans.Fit(w, k, maxIterations, keepZero, rate);
        var cols = affine is null ? f : f + 1;
        var augmented = affine is null ? w : Calibration.GramStatistics.Augment(w, affine.ReadBias(context.Graph, context.Model), rows, f);
        var moments = affine is null ? stats.Hessian() : stats.Moments;
        var result = CodebookGptq.Assign(augmented, rows, cols, f, moments, initial, keepZero, Pruning.UnstructuredPruningPass.Damping(Damping, f, stats.Rows));
        if (result is null) return new Fitted(original, Stored(layer, initial), "nearest (the input second moments on the calibration data are singular or not finite)", null, null);

        var nearest = new float[augmented.Length];
        augmented.CopyTo(nearest, 0);
        for (var r = 0; r < rows; r++)
            for (var c = 0; c < f; c++) nearest[r * cols + c] = initial.Values[initial.Indices[r * f + c]];
        var nearestError = CodebookGptq.OutputError(augmented, nearest, rows, cols, moments);
        var error = CodebookGptq.OutputError(augmented, result.Weights, rows, cols, moments);
        var assigned = new SharedWeights(result.Values, result.Indices, initial.Iterations, initial.Converged);
        var weights = cols == f ? result.Weights : Narrow(result.Weights, rows, cols, f);
        var bias = cols == f ? null : Enumerable.Range(0, rows).Select(r => result.Weights[r * cols + f]).ToArray();
        var originalBias = affine?.ReadBias(context.Graph, context.Model);
        if (affine is not null) affine.Write(context.Graph, weights, bias!, f);
        else layer.WriteMatrix(weights);
        // Should the shared form not be smaller after all, the layer goes back to what it was.
        void Restore()
        {
            if (affine is not null) affine.Write(context.Graph, w, originalBias!, f);
            else layer.WriteMatrix(w);
        }
        var method = $"gptq (nearest: {nearestError:0.####}{(affine is null ? "" : "; bias corrected")}); error = ‖ΔW·x‖/‖W·x‖ on {stats.Rows} calibration rows; damping {result.Damping:0.###}";
        return new Fitted(original, Stored(layer, assigned), method, error, Restore);
    }

    /// <summary>
    /// GPTQ dampening, a fraction of the mean diagonal of the input second moments (as Int4Damping), raised with the
    /// features per calibration row as SparseGPT's is (<see cref="Pruning.UnstructuredPruningPass.Damping"/>).
    /// </summary>
    private const double Damping = 0.01;

    /// <summary>Indices of a [out, in] assignment in the weight's stored order.</summary>
    private static SharedWeights Stored(WeightedLayer layer, SharedWeights outIn)
    {
        if (layer.StoredOutIn) return outIn;
        int rows = layer.OutFeatures, cols = layer.InFeatures;
        var t = new byte[outIn.Indices.Length];
        for (var r = 0; r < rows; r++)
            for (var c = 0; c < cols; c++) t[c * rows + r] = outIn.Indices[r * cols + c];
        return outIn with { Indices = t };
    }

    private static float[] Narrow(float[] augmented, int rows, int cols, int f)
    {
        var result = new float[rows * f];
        for (var r = 0; r < rows; r++) augmented.AsSpan(r * cols, f).CopyTo(result.AsSpan(r * f, f));
        return result;
    }

    private static bool Share(CompressionContext context, WeightedLayer layer, int k, Fitted fitted)
    {
        // The layer's own graph: in a subgraph the indices, codebook and lookup go there, under names unique in the model.
        var graph = layer.Graph;
        var weight = graph.Initializer(layer.Weight.Name) ?? layer.Weight;
        var w = fitted.Original;
        var zeros = w.LongCount(x => x == 0);
        var result = fitted.Result;

        var codebook = Tensors.FromFloats(graph.FreshName(weight.Name + "_codebook"), [result.Values.Length], result.Values);
        // The stored form that ships smallest: containers Brotli/Deflate the model, and packed 4-bit indices, half
        // the file bytes, often entropy-code worse than uint8 ones (a byte that holds two indices hides repeats from
        // the coder). Ties keep uint8 (fewer nodes). Deterministic: Brotli's output depends on its input only.
        // A pruned layer that sparse storage will re-encode keeps uint8: storage codes the zeros' positions itself, and
        // a byte of two indices is zero only when both are, which halves what it can skip (MLP 90 % + k=16: Brotli
        // 55.5 KiB with uint8 indices, 56.7 KiB with packed ones).
        var storedSparse = zeros > 0 && new Pruning.SparseStoragePass().IsRequested(context.Policy);
        var forms = new List<StoredForm> { Uint8Form(graph, weight, result.Indices) };
        if (!storedSparse && result.Values.Length <= 16 && result.Indices.Length % 2 == 0 && result.Indices.Length > 0) forms.Add(PackedForm(graph, weight, result.Indices));
        var chosen = forms.MinBy(f => f.Brotli)!;

        var gather = new NodeProto { OpType = "Gather", Name = graph.FreshName(weight.Name + "_codebook_lookup"), Input = { codebook.Name, chosen.Indices }, Output = { weight.Name } };
        var denseBytes = Framed(weight.CalculateSize());
        var sharedBytes = chosen.Bytes + Framed(codebook.CalculateSize()) + Framed(gather.CalculateSize());
        if (sharedBytes >= denseBytes)
        {
            fitted.Restore?.Invoke();
            LeaveFloat(context, layer, $"a codebook would not be smaller ({denseBytes} → {sharedBytes} bytes)");
            return false;
        }

        var reconstructed = new float[w.Length];
        double num = 0, den = 0;
        for (var i = 0; i < w.Length; i++)
        {
            reconstructed[i] = result.Values[result.Indices[i]];
            double d = w[i] - reconstructed[i];
            num += d * d;
            den += (double)w[i] * w[i];
        }
        var zerosAfter = reconstructed.LongCount(x => x == 0);

        graph.RemoveInitializer(weight.Name);
        foreach (var t in chosen.Initializers) graph.SetInitializer(t);
        graph.SetInitializer(codebook);
        foreach (var n in chosen.Nodes.Append(gather)) graph.InsertBefore(layer.Node, n);

        var entries = result.Values.Length;
        var settled = result.Converged ? $"settled after {result.Iterations} k-means iterations" : $"{result.Iterations} k-means iterations (the cap)";
        var fewer = entries < k ? $" (of {k} asked: fewer distinct values)" : "";
        var zero = zeros > 0 ? "; zeros kept exact as entry 0" : "";
        var alternatives = forms.Count > 1 ? $" (Brotli {string.Join(" vs ", forms.Select(f => $"{f.Label} {f.Brotli}"))} bytes)"
            : storedSparse && entries <= 16 ? " (kept uint8 for sparse storage)" : "";
        context.Record(new LayerRecord
        {
            Layer = layer.Name, Op = layer.OpType, Technique = "codebook", Shape = layer.WeightShape,
            ParametersBefore = layer.Parameters, ParametersAfter = layer.Parameters - zerosAfter,
            Sparsity = zerosAfter > 0 ? (double)zerosAfter / layer.Parameters : null,
            Bits = (int)Math.Ceiling(Math.Log2(entries)), ReconstructionError = fitted.OutputError ?? (den > 0 ? Math.Sqrt(num / den) : 0),
            Note = $"{entries} shared values{fewer}, {settled}{zero}; {fitted.Method}; {chosen.Label} indices + float codebook{alternatives}: {denseBytes} → {sharedBytes} bytes",
        });
        return true;
    }

    /// <summary>
    /// How the indices are stored: initializers and constant nodes that write int32 indices as <see cref="Indices"/>;
    /// <see cref="Bytes"/> what they add to the file, <see cref="Brotli"/> their serialized form after Brotli.
    /// </summary>
    private sealed record StoredForm(string Label, IReadOnlyList<TensorProto> Initializers, IReadOnlyList<NodeProto> Nodes, string Indices)
    {
        public long Bytes => Initializers.Sum(t => Framed(t.CalculateSize())) + Nodes.Sum(n => Framed(n.CalculateSize()));
        public long Brotli { get; } = Evaluation.DeployedSize.Brotli(Initializers.SelectMany(t => t.ToByteArray()).Concat(Nodes.SelectMany(n => n.ToByteArray())).ToArray());
    }

    /// <summary>One uint8 index per weight, in the weight's shape; a Cast gives Gather the int32 it takes.</summary>
    private static StoredForm Uint8Form(OnnxGraph graph, TensorProto weight, byte[] indices)
    {
        var stored = Tensors.FromUInt8s(graph.FreshName(weight.Name + "_codebook_indices"), weight.Dims.ToArray(), indices);
        var cast = Node("Cast", [stored.Name], graph.FreshName(weight.Name + "_codebook_indices_int32"), Int("to", (long)TensorProto.Types.DataType.Int32));
        cast.Name = graph.FreshName(weight.Name + "_codebook_cast");
        return new StoredForm("uint8", [stored], [cast], cast.Output[0]);
    }

    /// <summary>
    /// Two 4-bit indices per byte (codebooks of at most 16 entries, an even count of weights), planar: index j sits in
    /// byte j mod B, low nibble for the first half, high for the second, so unpacking is one broadcast BitShift left by
    /// [4, 0] and one right by 4, which gives both halves in order. All constant: ORT folds it at load like the Cast.
    /// </summary>
    private static StoredForm PackedForm(OnnxGraph graph, TensorProto weight, byte[] indices)
    {
        var bytes = indices.Length / 2;
        var packed = new byte[bytes];
        for (var j = 0; j < indices.Length; j++) packed[j % bytes] |= (byte)(indices[j] << (j / bytes * 4));
        var stored = Tensors.FromUInt8s(graph.FreshName(weight.Name + "_codebook_nibbles"), [1, bytes], packed);
        var shifts = Tensors.FromUInt8s(graph.FreshName(weight.Name + "_codebook_shifts"), [2, 1], PackedIndicesDecoder.Shifts);
        var align = Tensors.FromUInt8s(graph.FreshName(weight.Name + "_codebook_align"), [], [4]);
        var shape = Tensors.FromInt64s(graph.FreshName(weight.Name + "_codebook_shape"), [weight.Dims.Count], weight.Dims.ToArray());
        string Name(string suffix) => graph.FreshName(weight.Name + "_codebook_" + suffix);
        var left = Node("BitShift", [stored.Name, shifts.Name], Name("fields"), String("direction", "LEFT"));
        var right = Node("BitShift", [left.Output[0], align.Name], Name("unpacked"), String("direction", "RIGHT"));
        var reshape = Node("Reshape", [right.Output[0], shape.Name], Name("indices_uint8"));
        var cast = Node("Cast", [reshape.Output[0]], Name("indices_int32"), Int("to", (long)TensorProto.Types.DataType.Int32));
        NodeProto[] nodes = [left, right, reshape, cast];
        foreach (var n in nodes) n.Name = n.Output[0] + "_node";
        return new StoredForm("packed 4-bit", [stored, shifts, align, shape], nodes, cast.Output[0]);
    }

    /// <summary>Conv/Gemm/MatMul layers asked for a codebook whose weight is already int8 behind a DequantizeLinear.</summary>
    private static void RecordQuantizedLayers(CompressionContext context)
    {
        var graph = context.Graph;
        foreach (var node in graph.Nodes.ToList())
        {
            // By op type alone (any domain), as the quantization passes leave the node's op as it was.
            if (OpRegistry.For(node.OpType) is not { WeightInput: { } w } entry || !entry.Techniques.HasFlag(OpTechnique.Codebook) || node.Input.Count <= w) continue;
            if (graph.Producer(node.Input[w]) is not { OpType: "DequantizeLinear" }) continue;
            if (context.Options<CodebookOptions>(node).Codebook is null) continue;
            context.Record(new LayerRecord
            {
                Layer = CompressionContext.LayerName(node), Op = node.OpType, Technique = "codebook",
                Note = "left as it is: already quantized (its weight is stored in 8 bits behind a DequantizeLinear; shared float values would not be smaller)",
            });
        }
    }

    private static void LeaveFloat(CompressionContext context, WeightedLayer layer, string reason) => context.Record(new LayerRecord
    {
        Layer = layer.Name, Op = layer.OpType, Technique = "codebook", Shape = layer.WeightShape,
        ParametersBefore = layer.Parameters, ParametersAfter = layer.Parameters, Bits = 32, Note = "left in float: " + reason,
    });

    /// <summary>Bytes a message adds to its parent: the message, its field tag and its length.</summary>
    private static long Framed(int size) => size + 1 + CodedOutputStream.ComputeLengthSize(size);
}
