using Google.Protobuf;
using ModelCompression.Calibration;
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
        var candidates = new List<(WeightedLayer Layer, CodebookOptions Options, int K)>();
        foreach (var layer in WeightedLayer.FindAll(graph))
        {
            context.Cancellation.ThrowIfCancellationRequested();
            var options = context.Options<CodebookOptions>(layer.Node);
            if (options.Codebook is not { } k) continue; // a policy-file entry asks for other layers only
            if (context.IsExcluded(layer.Node)) LeaveFloat(context, layer, "excluded by policy");
            else if (OpRegistry.WhyNot(layer.Node, OpTechnique.Codebook) is { } reason) LeaveFloat(context, layer, reason);
            else if (graphInputs.Contains(layer.Weight.Name) || layer.Graph.GraphInputNames.Contains(layer.Weight.Name)) LeaveFloat(context, layer, "the weight is also a graph input (it can be fed at run time)");
            else candidates.Add((layer, options, k));
        }
        // Data-aware scalar codebooks first, stage by stage, each measured on the inputs the layers already shared
        // before it produce; then every layer's stored form.
        var fitted = new Dictionary<WeightedLayer, Fitted>(ReferenceEqualityComparer.Instance);
        var nearestWhy = new Dictionary<WeightedLayer, string>(ReferenceEqualityComparer.Instance);
        var dataAware = new List<(WeightedLayer Layer, CodebookOptions Options, int K)>();
        foreach (var target in candidates)
        {
            var (layer, options, _) = target;
            if (options.AssignmentFor(context.HasCalibration) != CodebookAssignment.Gptq)
            {
                if (options.CodebookAssignment == CodebookAssignment.Gptq) nearestWhy[layer] = "gptq assigns scalar codebooks only";
                continue;
            }
            var why = layer.InSubgraph ? WeightedLayer.SubgraphReason
                : layer.Layout == WeightLayout.Convolution && layer.Group != 1 ? "grouped conv (the input statistics need group=1)"
                : null;
            if (why is null) dataAware.Add(target);
            else nearestWhy[layer] = why;
        }
        var importance = Importances(context, candidates.Where(c => !dataAware.Contains(c)).ToList());
        if (dataAware.Count > 0)
        {
            var capture = new LayerCapture(context, Name);
            var stages = LayerCapture.Stages(graph, dataAware.Select(t => t.Layer).ToList());
            foreach (var stage in stages.Distinct().Order())
            {
                context.Cancellation.ThrowIfCancellationRequested();
                capture.ReportStage(stage, stages.Max() + 1);
                var ready = dataAware.Where((_, i) => stages[i] == stage).ToList();
                var stats = capture.InputGrams(ready.Select(t => t.Layer).ToList());
                for (var i = 0; i < ready.Count; i++)
                {
                    var (layer, options, k) = ready[i];
                    var h = options.WeightsByActivation ? FromMoments(stats[i], layer.InFeatures) : null;
                    if (options.WeightsByActivation) importance[layer.Node] = h ?? Unmeasured;
                    fitted[layer] = DataAware(context, layer, k, options.CodebookIterations, Rate(layer, options, CodebookAssignment.Gptq, k), stats[i], h?.PerInput);
                }
            }
        }
        var shared = 0;
        foreach (var (layer, options, k) in candidates)
        {
            context.Cancellation.ThrowIfCancellationRequested();
            var assignment = nearestWhy.TryGetValue(layer, out var why) ? $"nearest ({why})" : "nearest";
            if (Share(context, layer, options, k, importance.GetValueOrDefault(layer.Node), fitted.GetValueOrDefault(layer), assignment)) shared++;
        }
        if (shared == 0) context.Warn(DiagnosticCodes.NothingToCompress, "codebook: no Conv/Gemm/MatMul layer with a constant float weight got a smaller shared form");
    }

    /// <summary>
    /// What each input feature of a layer weighs in the fit (CodebookWeighting=activation): its second moment E[x_i²]
    /// on the calibration data (im2col features for convs), the diagonal of the XᵀX that data-aware pruning uses, so
    /// Σ E[x_i²](w − c)² is the layer's output error if its inputs were uncorrelated. One capture of the model as it
    /// reaches this pass serves every layer. A layer it cannot measure (in a subgraph, a grouped conv) is fitted
    /// unweighted and says why.
    /// </summary>
    private Dictionary<NodeProto, Importance> Importances(CompressionContext context, List<(WeightedLayer Layer, CodebookOptions Options, int K)> candidates)
    {
        var result = new Dictionary<NodeProto, Importance>(ReferenceEqualityComparer.Instance);
        var measured = new List<WeightedLayer>();
        foreach (var (layer, options, _) in candidates)
        {
            if (!options.WeightsByActivation) continue;
            if (layer.InSubgraph) result[layer.Node] = new Importance(null, 0, "unweighted: " + WeightedLayer.SubgraphReason);
            else if (layer.Layout == WeightLayout.Convolution && layer.Group != 1) result[layer.Node] = new Importance(null, 0, "unweighted: grouped conv (its input moments are not captured per group)");
            else measured.Add(layer);
        }
        if (measured.Count == 0) return result;
        var capture = new LayerCapture(context, Name);
        // Before the staged fits (if any): this run holds the pass's fraction at the start.
        capture.ReportWithin(0, 0);
        var stats = capture.InputGrams(measured);
        for (var l = 0; l < measured.Count; l++) result[measured[l].Node] = FromMoments(stats[l], measured[l].InFeatures) ?? Unmeasured;
        return result;
    }

    /// <summary>Per input feature, E[x²] (null: unweighted) on <see cref="Rows"/> calibration rows; <see cref="Why"/> when weighting was asked but not done.</summary>
    private sealed record Importance(double[]? PerInput, long Rows, string? Why);

    private static readonly Importance Unmeasured = new(null, 0, "unweighted: the input second moments on the calibration data are zero or not finite");

    /// <summary>E[x_i²] per input from a layer's input second moments; null when they are zero or not finite.</summary>
    private static Importance? FromMoments(GramStatistics s, int f)
    {
        var h = new double[f];
        for (var i = 0; i < f; i++) h[i] = s.Moments[i * (f + 1) + i] / Math.Max(1, s.Rows);
        var mean = h.Average();
        if (!(mean > 0) || h.Any(x => !double.IsFinite(x))) return null;
        // A floor far below any input that matters keeps every weight's cluster defined (an input never active
        // on the calibration data would otherwise leave its weights anywhere).
        for (var i = 0; i < f; i++) h[i] = Math.Max(h[i], 1e-6 * mean);
        return new Importance(h, s.Rows, null);
    }

    /// <summary>One importance per stored weight element, from one per input feature.</summary>
    private static double[] PerElement(WeightedLayer layer, double[] perInput)
    {
        var n = layer.Parameters;
        var result = new double[n];
        for (var s = 0; s < n; s++) result[s] = perInput[layer.StoredOutIn ? s % layer.InFeatures : s / layer.OutFeatures];
        return result;
    }

    /// <summary>
    /// CodebookRate (<see cref="CodebookOptions.RateFor"/>), except for layers of fewer than <see cref="SmallLayer"/>
    /// weights, which keep plain k-means: their indices take at most 2 KiB, so entropy coding saves a few hundred bytes
    /// there, and such layers are usually the most sensitive ones, the first conv and the head (ResNet 70 % + 16
    /// values: 93.05 % top-1 with the stem and the head at rate 0, 92.45 % with every layer at 4, the same 5.46 %
    /// Brotli size).
    /// </summary>
    private static double Rate(WeightedLayer layer, CodebookOptions options, CodebookAssignment assignment, int k) => layer.Parameters < SmallLayer ? 0 : options.RateFor(assignment, k);

    private const long SmallLayer = 4096;

    /// <summary>
    /// A data-aware layer's codebook before it is stored: the weight as it was (stored order), the shared form (indices
    /// in stored order), how it was assigned, the output error, and how to put the weight and bias back.
    /// </summary>
    private sealed record Fitted(float[] Original, SharedWeights Result, string Method, double? OutputError, Action? Restore);

    /// <summary>
    /// k-means, then <see cref="CodebookGptq"/> against the layer's input second moments (with the bias as a last
    /// column that absorbs the compensation where the layer has one); the result is written at once, so the next
    /// stages are measured on it.
    /// </summary>
    private static Fitted DataAware(CompressionContext context, WeightedLayer layer, int k, int maxIterations, double rate, GramStatistics stats, double[]? perInput)
    {
        var original = context.Model.ReadFloats(layer.Weight);
        // Gemm's alpha would scale the shared values: such a layer is assigned without its bias.
        var affine = layer.OpType == "Gemm" && layer.Node.Attribute.Any(a => a.Name == "alpha" && a.F != 1) ? null : Pruning.AffineLayer.From(context.Graph, layer);
        var f = layer.InFeatures;
        var rows = layer.OutFeatures;
        var w = layer.ReadMatrix(context.Model);
        var keepZero = w.Any(x => x == 0);
        var initial = ScalarKMeans.Fit(w, k, maxIterations, keepZero, rate, perInput is null ? default : Enumerable.Range(0, w.Length).Select(i => perInput[i % f]).ToArray());
        var cols = affine is null ? f : f + 1;
        var augmented = affine is null ? w : GramStatistics.Augment(w, affine.ReadBias(context.Graph, context.Model), rows, f);
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

    private static bool Share(CompressionContext context, WeightedLayer layer, CodebookOptions options, int k, Importance? importance, Fitted? fitted, string assignment)
    {
        // The layer's own graph: in a subgraph the indices, codebook and lookup go there, under names unique in the model.
        var graph = layer.Graph;
        var weight = graph.Initializer(layer.Weight.Name) ?? layer.Weight;
        var w = fitted?.Original ?? context.Model.ReadFloats(weight);
        var zeros = w.LongCount(x => x == 0);
        var h = importance?.PerInput;
        var method = options.CodebookMethod;
        var fallback = "";
        // Product sub-vectors follow the weight's shape (Stock et al. 2020) instead of runs of the flat row, which
        // cross kernels and channels: a Gemm/MatMul row or a 1×1 conv's input channels are cut into runs of
        // CodebookSubvector; a wider conv kernel is one vector (kernel) or, at each kernel position, runs of
        // CodebookSubvector input channels (channels).
        var kernel = layer.Layout == WeightLayout.Convolution ? (int)weight.Dims.Skip(2).Aggregate(1L, (a, b) => a * b) : 1;
        var byKernel = kernel > 1 && options.CodebookConvVector == CodebookConvVector.Kernel;
        var byChannel = kernel > 1 && !byKernel;
        var subvector = byKernel ? kernel : options.CodebookSubvector;
        if (method == CodebookMethod.Product && !byKernel && (layer.InFeatures / kernel) % subvector != 0)
        {
            method = CodebookMethod.Scalar;
            fallback = $"; scalar: {layer.InFeatures / kernel} input channels do not split into vectors of {subvector}";
        }
        // The stored form that ships smallest: containers Brotli/Deflate the model, and packed 4-bit indices, half
        // the file bytes, often entropy-code worse than uint8 ones (a byte that holds two indices hides repeats from
        // the coder). Ties keep uint8 (fewer nodes). Deterministic: Brotli's output depends on its input only.
        // A pruned layer that sparse storage will re-encode keeps uint8: storage codes the zeros' positions itself, and
        // a byte of two indices is zero only when both are, which halves what it can skip (MLP 90 % + k=16: Brotli
        // 55.5 KiB with uint8 indices, 56.7 KiB with packed ones).
        var storedSparse = zeros > 0 && new Pruning.SparseStoragePass().IsRequested(context.Policy);
        StoredForm Choose(string stem, byte[] indices, int entries, long[] dims)
        {
            var forms = new List<StoredForm> { Uint8Form(graph, stem, dims, indices) };
            if (!storedSparse && entries <= 16 && indices.Length % 2 == 0 && indices.Length > 0) forms.Add(PackedForm(graph, stem, dims, indices));
            var chosen = forms.MinBy(f => f.Brotli)!;
            return chosen with { Alternatives = forms.Count > 1 ? $" (Brotli {string.Join(" vs ", forms.Select(f => $"{f.Label} {f.Brotli}"))} bytes)"
                : storedSparse && entries <= 16 ? " (kept uint8 for sparse storage)" : "" };
        }

        var stem = weight.Name + "_codebook";
        var elementImportance = h is null || method == CodebookMethod.Product ? null : PerElement(layer, h);
        var reconstructed = new float[w.Length];
        var initializers = new List<TensorProto>();
        var nodes = new List<NodeProto>();
        string what;
        int bits;
        switch (method)
        {
            case CodebookMethod.Product:
            {
                var d = subvector;
                var (rows, cols) = (layer.OutFeatures, layer.InFeatures);
                var matrix = layer.ReadMatrix(context.Model);
                var columnImportance = h ?? Enumerable.Repeat(1.0, cols).ToArray();
                // By channel: each row's (channel, position) columns reordered to (position, channel), so runs of d
                // consecutive columns are d input channels at one kernel position.
                var channels = cols / kernel;
                int Column(int j) => byChannel ? j % channels * kernel + j / channels : j;
                if (byChannel)
                {
                    var reordered = new float[matrix.Length];
                    for (var r = 0; r < rows; r++)
                        for (var j = 0; j < cols; j++) reordered[r * cols + j] = matrix[r * cols + Column(j)];
                    matrix = reordered;
                    columnImportance = Enumerable.Range(0, cols).Select(j => columnImportance[Column(j)]).ToArray();
                }
                var result = ProductKMeans.Fit(matrix, rows, cols, d, k, options.CodebookIterations, zeros > 0, columnImportance, context.Policy.Execution.Seed);
                var entries = result.Values.Length / d;
                var codebook = Tensors.FromFloats(graph.FreshName(stem), [entries, d], result.Values);
                var form = Choose(stem, result.Indices, entries, [rows, cols / d]);
                var decoded = new float[rows * cols];
                for (var v = 0; v < result.Indices.Length; v++) result.Values.AsSpan(result.Indices[v] * d, d).CopyTo(decoded.AsSpan(v * d, d));
                var outIn = decoded;
                if (byChannel)
                {
                    outIn = new float[decoded.Length];
                    for (var r = 0; r < rows; r++)
                        for (var j = 0; j < cols; j++) outIn[r * cols + Column(j)] = decoded[r * cols + j];
                }
                (layer.StoredOutIn ? outIn : WeightedLayer.Transpose(outIn, rows, cols)).CopyTo(reconstructed, 0);
                // Gather gives [rows, cols / d, d]; a Reshape (and for [in, out] weights, or a conv by channel, a
                // Transpose) gives the layout.
                var dims = weight.Dims.ToArray();
                long[] shaped = !layer.StoredOutIn ? [rows, cols] : byChannel ? [dims[0], .. dims[2..], dims[1]] : dims;
                long[]? perm = !layer.StoredOutIn ? [1, 0] : byChannel ? [0, dims.Length - 1, .. Enumerable.Range(1, dims.Length - 2).Select(i => (long)i)] : null;
                var vectors = Named(Node("Gather", [codebook.Name, form.Indices], graph.FreshName(stem + "_vectors")), graph.FreshName(stem + "_lookup"));
                var shape = Tensors.FromInt64s(graph.FreshName(stem + "_shape"), [shaped.Length], shaped);
                var reshape = Named(Node("Reshape", [vectors.Output[0], shape.Name], perm is null ? weight.Name : graph.FreshName(stem + "_shaped")), graph.FreshName(stem + "_reshape"));
                initializers.AddRange([.. form.Initializers, codebook, shape]);
                nodes.AddRange([.. form.Nodes, vectors, reshape]);
                if (perm is not null) nodes.Add(Named(Node("Transpose", [reshape.Output[0]], weight.Name, Ints("perm", perm)), graph.FreshName(stem + "_transpose")));
                var fewer = entries < k ? $" (of {k} asked)" : "";
                var settled = result.Converged ? $"settled after {result.Iterations} k-means iterations" : $"{result.Iterations} k-means iterations (the cap)";
                var zero = zeros > 0 ? "; all-zero vectors kept exact as entry 0" : "";
                what = $"product quantization: {entries} shared vectors of {(byKernel ? $"one {string.Join("×", weight.Dims.Skip(2))} kernel, {d} inputs" : byChannel ? $"{d} input channels at one kernel position" : $"{d} inputs")}{fewer}, {settled}{zero}; {form.Label} indices (one per vector) + float [{entries}, {d}] codebook{form.Alternatives}";
                bits = (int)Math.Ceiling(Math.Log2(Math.Max(2, entries)) / d);
                break;
            }
            default:
            {
                // Pruned weights must stay exactly zero: they get a fixed entry of their own (in both stages of residual).
                var rate = method == CodebookMethod.Scalar ? Rate(layer, options, CodebookAssignment.Nearest, k) : 0;
                var first = fitted?.Result ?? ScalarKMeans.Fit(w, k, options.CodebookIterations, keepZero: zeros > 0, rate, elementImportance);
                for (var i = 0; i < w.Length; i++) reconstructed[i] = first.Values[first.Indices[i]];
                var stages = new List<(SharedWeights Fit, string Stem)> { (first, stem) };
                if (method == CodebookMethod.Residual)
                {
                    var residual = new float[w.Length];
                    for (var i = 0; i < w.Length; i++) residual[i] = w[i] - reconstructed[i];
                    var second = ScalarKMeans.Fit(residual, k, options.CodebookIterations, keepZero: zeros > 0, importance: elementImportance);
                    // What ONNX Runtime computes: the float sum of the two lookups.
                    for (var i = 0; i < w.Length; i++) reconstructed[i] += second.Values[second.Indices[i]];
                    stages.Add((second, weight.Name + "_residual_codebook"));
                }
                var parts = new List<string>();
                var lookups = new List<string>();
                foreach (var (fit, stageStem) in stages)
                {
                    var codebook = Tensors.FromFloats(graph.FreshName(stageStem), [fit.Values.Length], fit.Values);
                    var form = Choose(stageStem, fit.Indices, fit.Values.Length, weight.Dims.ToArray());
                    var output = stages.Count == 1 ? weight.Name : graph.FreshName(stageStem + "_values");
                    var gather = new NodeProto { OpType = "Gather", Name = graph.FreshName(stageStem + "_lookup"), Input = { codebook.Name, form.Indices }, Output = { output } };
                    initializers.AddRange([.. form.Initializers, codebook]);
                    nodes.AddRange([.. form.Nodes, gather]);
                    lookups.Add(output);
                    var fewer = fit.Values.Length < k ? $" (of {k} asked: fewer distinct values)" : "";
                    var settled = fit.Converged ? $"settled after {fit.Iterations} k-means iterations" : $"{fit.Iterations} k-means iterations (the cap)";
                    parts.Add($"{fit.Values.Length} shared values{fewer}, {settled}; {form.Label} indices + float codebook{form.Alternatives}");
                }
                if (stages.Count == 2)
                {
                    var add = Node("Add", lookups, weight.Name);
                    add.Name = graph.FreshName(stem + "_sum");
                    nodes.Add(add);
                }
                var zero = zeros > 0 ? "; zeros kept exact as entry 0" : "";
                what = stages.Count == 2 ? $"residual: {parts[0]}; plus {parts[1]}{zero}" : parts[0] + zero;
                bits = stages.Sum(s => (int)Math.Ceiling(Math.Log2(s.Fit.Values.Length)));
                break;
            }
        }

        var denseBytes = Framed(context.Model.InlineSize(weight));
        var sharedBytes = initializers.Sum(t => Framed(t.CalculateSize())) + nodes.Sum(n => Framed(n.CalculateSize()));
        if (sharedBytes >= denseBytes)
        {
            fitted?.Restore?.Invoke();
            LeaveFloat(context, layer, $"a codebook would not be smaller ({denseBytes} → {sharedBytes} bytes)");
            return false;
        }

        double num = 0, den = 0;
        for (var i = 0; i < w.Length; i++)
        {
            double d = w[i] - reconstructed[i];
            num += d * d;
            den += (double)w[i] * w[i];
        }
        var zerosAfter = reconstructed.LongCount(x => x == 0);

        graph.RemoveInitializer(weight.Name);
        foreach (var t in initializers) graph.SetInitializer(t);
        foreach (var n in nodes) graph.InsertBefore(layer.Node, n);

        var unrated = method != CodebookMethod.Scalar && options.CodebookRate > 0 ? "; CodebookRate applies to scalar codebooks only" : "";
        var weighting = h is not null ? $"; fitted weighted by input E[x²] on {importance!.Rows} calibration rows" : importance?.Why is { } why ? "; " + why : "";
        context.Record(new LayerRecord
        {
            Layer = layer.Name, Op = layer.OpType, Technique = "codebook", Shape = layer.WeightShape,
            ParametersBefore = layer.Parameters, ParametersAfter = layer.Parameters - zerosAfter,
            Sparsity = zerosAfter > 0 ? (double)zerosAfter / layer.Parameters : null,
            Bits = bits, ReconstructionError = fitted?.OutputError ?? (den > 0 ? Math.Sqrt(num / den) : 0),
            Note = $"{what}{fallback}; {fitted?.Method ?? assignment}{unrated}{weighting}: {denseBytes} → {sharedBytes} bytes",
        });
        return true;
    }

    /// <summary>
    /// How the indices are stored: initializers and constant nodes that write int32 indices as <see cref="Indices"/>;
    /// <see cref="Bytes"/> what they add to the file, <see cref="Brotli"/> their serialized form after Brotli.
    /// </summary>
    private sealed record StoredForm(string Label, IReadOnlyList<TensorProto> Initializers, IReadOnlyList<NodeProto> Nodes, string Indices)
    {
        /// <summary>The forms compared, for the layer's note.</summary>
        public string Alternatives { get; init; } = "";
        public long Bytes => Initializers.Sum(t => Framed(t.CalculateSize())) + Nodes.Sum(n => Framed(n.CalculateSize()));
        public long Brotli { get; } = Evaluation.DeployedSize.Brotli(Initializers.SelectMany(t => t.ToByteArray()).Concat(Nodes.SelectMany(n => n.ToByteArray())).ToArray());
    }

    /// <summary>One uint8 index per weight, in the weight's shape; a Cast gives Gather the int32 it takes.</summary>
    private static StoredForm Uint8Form(OnnxGraph graph, string stem, long[] dims, byte[] indices)
    {
        var stored = Tensors.FromUInt8s(graph.FreshName(stem + "_indices"), dims, indices);
        var cast = Node("Cast", [stored.Name], graph.FreshName(stem + "_indices_int32"), Int("to", (long)TensorProto.Types.DataType.Int32));
        cast.Name = graph.FreshName(stem + "_cast");
        return new StoredForm("uint8", [stored], [cast], cast.Output[0]);
    }

    /// <summary>
    /// Two 4-bit indices per byte (codebooks of at most 16 entries, an even count of weights), planar: index j sits in
    /// byte j mod B, low nibble for the first half, high for the second, so unpacking is one broadcast BitShift left by
    /// [4, 0] and one right by 4, which gives both halves in order. All constant: ORT folds it at load like the Cast.
    /// </summary>
    private static StoredForm PackedForm(OnnxGraph graph, string stem, long[] dims, byte[] indices)
    {
        var bytes = indices.Length / 2;
        var packed = new byte[bytes];
        for (var j = 0; j < indices.Length; j++) packed[j % bytes] |= (byte)(indices[j] << (j / bytes * 4));
        var stored = Tensors.FromUInt8s(graph.FreshName(stem + "_nibbles"), [1, bytes], packed);
        var shifts = Tensors.FromUInt8s(graph.FreshName(stem + "_shifts"), [2, 1], PackedIndicesDecoder.Shifts);
        var align = Tensors.FromUInt8s(graph.FreshName(stem + "_align"), [], [4]);
        var shape = Tensors.FromInt64s(graph.FreshName(stem + "_shape"), [dims.Length], dims);
        string Name(string suffix) => graph.FreshName(stem + "_" + suffix);
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

    private static NodeProto Named(NodeProto node, string name)
    {
        node.Name = name;
        return node;
    }

    /// <summary>Bytes a message adds to its parent: the message, its field tag and its length.</summary>
    private static long Framed(long size) => size + 1 + CodedOutputStream.ComputeLengthSize((int)Math.Min(size, int.MaxValue));
}
