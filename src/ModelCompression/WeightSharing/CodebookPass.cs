using Google.Protobuf;
using ModelCompression.Diagnostics;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using ModelCompression.Policy;

namespace ModelCompression.WeightSharing;

/// <summary>
/// <c>Codebook=k</c>: weight sharing (Gong et al. 2014; Han et al., Deep Compression, 2016). Each Conv/Gemm/MatMul
/// weight's values are clustered by k-means into k shared values (<see cref="ScalarKMeans"/>); the weight is stored as
/// uint8 indices of its own shape plus the float codebook, and a <c>Gather(codebook, Cast(indices))</c> writes the
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
        var shared = 0;
        foreach (var layer in WeightedLayer.FindAll(graph))
        {
            context.Cancellation.ThrowIfCancellationRequested();
            var options = context.Options<CodebookOptions>(layer.Node);
            if (options.Codebook is not { } k) continue; // a policy-file entry asks for other layers only
            if (context.IsExcluded(layer.Node)) LeaveFloat(context, layer, "excluded by policy");
            else if (OpRegistry.WhyNot(layer.Node, OpTechnique.Codebook) is { } reason) LeaveFloat(context, layer, reason);
            else if (graphInputs.Contains(layer.Weight.Name) || layer.Graph.GraphInputNames.Contains(layer.Weight.Name)) LeaveFloat(context, layer, "the weight is also a graph input (it can be fed at run time)");
            else if (Share(context, layer, k, options.CodebookIterations)) shared++;
        }
        if (shared == 0) context.Warn(DiagnosticCodes.NothingToCompress, "codebook: no Conv/Gemm/MatMul layer with a constant float weight got a smaller shared form");
    }

    private static bool Share(CompressionContext context, WeightedLayer layer, int k, int maxIterations)
    {
        // The layer's own graph: in a subgraph the indices, codebook and lookup go there, under names unique in the model.
        var graph = layer.Graph;
        var weight = layer.Weight;
        var w = context.Model.ReadFloats(weight);
        var zeros = w.LongCount(x => x == 0);
        // Pruned weights must stay exactly zero: they get a fixed entry of their own.
        var result = ScalarKMeans.Fit(w, k, maxIterations, keepZero: zeros > 0);

        var indices = Tensors.FromUInt8s(graph.FreshName(weight.Name + "_codebook_indices"), weight.Dims.ToArray(), result.Indices);
        var codebook = Tensors.FromFloats(graph.FreshName(weight.Name + "_codebook"), [result.Values.Length], result.Values);
        var indices32 = graph.FreshName(weight.Name + "_codebook_indices_int32");
        var cast = new NodeProto { OpType = "Cast", Name = graph.FreshName(weight.Name + "_codebook_cast"), Input = { indices.Name }, Output = { indices32 } };
        // Gather takes int32/int64 indices only: uint8 is how they are stored, int32 what the Cast (folded too) gives.
        cast.Attribute.Add(new AttributeProto { Name = "to", Type = AttributeProto.Types.AttributeType.Int, I = (long)TensorProto.Types.DataType.Int32 });
        var gather = new NodeProto { OpType = "Gather", Name = graph.FreshName(weight.Name + "_codebook_lookup"), Input = { codebook.Name, indices32 }, Output = { weight.Name } };

        var denseBytes = Framed(weight.CalculateSize());
        var sharedBytes = Framed(indices.CalculateSize()) + Framed(codebook.CalculateSize()) + Framed(cast.CalculateSize()) + Framed(gather.CalculateSize());
        if (sharedBytes >= denseBytes)
        {
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
        graph.SetInitializer(indices);
        graph.SetInitializer(codebook);
        graph.InsertBefore(layer.Node, cast);
        graph.InsertBefore(layer.Node, gather);

        var entries = result.Values.Length;
        var settled = result.Converged ? $"settled after {result.Iterations} k-means iterations" : $"{result.Iterations} k-means iterations (the cap)";
        var fewer = entries < k ? $" (of {k} asked: fewer distinct values)" : "";
        var zero = zeros > 0 ? "; zeros kept exact as entry 0" : "";
        context.Record(new LayerRecord
        {
            Layer = layer.Name, Op = layer.OpType, Technique = "codebook", Shape = layer.WeightShape,
            ParametersBefore = layer.Parameters, ParametersAfter = layer.Parameters - zerosAfter,
            Sparsity = zerosAfter > 0 ? (double)zerosAfter / layer.Parameters : null,
            Bits = (int)Math.Ceiling(Math.Log2(entries)), ReconstructionError = den > 0 ? Math.Sqrt(num / den) : 0,
            Note = $"{entries} shared values{fewer}, {settled}{zero}; uint8 indices + float codebook: {denseBytes} → {sharedBytes} bytes",
        });
        return true;
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
