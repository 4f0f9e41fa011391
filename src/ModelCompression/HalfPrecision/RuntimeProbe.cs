using System.Text.RegularExpressions;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using ModelCompression.Diagnostics;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Runtime;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;

namespace ModelCompression.HalfPrecision;

/// <summary>
/// What ONNX Runtime itself says about a model: the element type of every value (its type inference, so no op list
/// is kept here), and which op of a converted model it has no kernel for on the configured execution provider.
/// </summary>
internal static partial class RuntimeProbe
{
    /// <summary>
    /// The element type of every node output of the main graph, graph input and initializer: a copy of the model
    /// whose outputs are all node outputs, left untyped for ONNX Runtime to infer, loaded without optimizations.
    /// </summary>
    public static Dictionary<string, DataType> ValueTypes(OnnxModel model, string? file)
    {
        var types = new Dictionary<string, DataType>(StringComparer.Ordinal);
        foreach (var input in model.Graph.Input)
            if (input.Type?.TensorType is { ElemType: not 0 } t) types[input.Name] = (DataType)t.ElemType;
        foreach (var init in model.Graph.Initializer) types[init.Name] = (DataType)init.DataType;

        var probe = model.Clone();
        var declared = probe.Graph.Output.ToDictionary(o => o.Name, StringComparer.Ordinal);
        probe.Graph.Output.Clear();
        var names = probe.Graph.Node.SelectMany(n => n.Output).Where(o => o.Length > 0 && !types.ContainsKey(o)).Distinct().ToList();
        foreach (var name in names) probe.Graph.Output.Add(declared.GetValueOrDefault(name) ?? new ValueInfoProto { Name = name });

        OnnxRuntimeLoader.EnsureConfigured();
        using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL };
        try
        {
            using var session = new InferenceSession(probe.ToBytes(), options);
            foreach (var (name, meta) in session.OutputMetadata)
                if (meta.OnnxValueType == OnnxValueType.ONNX_TYPE_TENSOR && ToDataType(meta.ElementDataType) is { } type) types[name] = type;
        }
        catch (OnnxRuntimeException e)
        {
            throw new CompressionException(DiagnosticCodes.UnsupportedModel, $"float16/bfloat16: ONNX Runtime cannot infer the model's value types: {FirstLine(e.Message)}", file, e);
        }
        return types;
    }

    /// <summary>
    /// Null when ONNX Runtime loads <paramref name="candidate"/> (no graph optimizations: kernel assignment as
    /// written); otherwise the op type it has no kernel for, or whose schema rejects the 16-bit type.
    /// </summary>
    public static (string OpType, string Message)? Rejected(OnnxModel candidate, RuntimeOptions runtime, string? file)
    {
        try
        {
            using var session = OnnxRuntimeSession.Create(candidate.ToBytes(), runtime with { OptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL }, file);
            return null;
        }
        catch (CompressionException e) when (e.InnerException is OnnxRuntimeException inner)
        {
            var message = inner.Message;
            if (NoKernel().Match(message) is { Success: true } k) return (k.Groups[1].Value, FirstLine(message));
            if (TypeError().Match(message) is { Success: true } t) return (t.Groups[1].Value, FirstLine(message));
            throw;
        }
    }

    /// <summary>
    /// The nodes of <paramref name="candidate"/> that ONNX Runtime runs in float32 although they are written in
    /// float16: for a float16 node without a CPU kernel it does not fail but inserts Casts to float32 around it
    /// (its InsertCastTransformer). Read from the graph it writes after its transformations: a node whose input
    /// comes from a float32 Cast that the candidate does not have. Node names must be unique and non-empty.
    /// </summary>
    public static HashSet<string> RunInFloat32(OnnxModel candidate, RuntimeOptions runtime, string? file)
    {
        var folder = Directory.CreateTempSubdirectory("modelcompression-half-");
        try
        {
            var path = Path.Combine(folder.FullName, "transformed.onnx");
            OnnxRuntimeLoader.EnsureConfigured();
            using (var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL, OptimizedModelFilePath = path, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL })
            {
                if (runtime.Provider.IsCuda) options.AppendExecutionProvider_CUDA(runtime.Provider.DeviceId);
                try
                {
                    using var session = new InferenceSession(candidate.ToBytes(), options);
                }
                catch (OnnxRuntimeException e)
                {
                    throw new CompressionException(DiagnosticCodes.RuntimeFailure, $"float16/bfloat16: ONNX Runtime cannot load the converted model: {FirstLine(e.Message)}", file, e);
                }
            }
            using var transformed = OnnxModel.Load(path);
            var written = candidate.Graph.Node.Select(n => n.Name).ToHashSet(StringComparer.Ordinal);
            var insertedCasts = transformed.Graph.Node
                .Where(n => n.OpType == "Cast" && !written.Contains(n.Name) && n.Attribute.Any(a => a.Name == "to" && a.I == (int)DataType.Float))
                .SelectMany(n => n.Output).ToHashSet(StringComparer.Ordinal);
            return transformed.Graph.Node.Where(n => written.Contains(n.Name) && n.Input.Any(insertedCasts.Contains)).Select(n => n.Name).ToHashSet(StringComparer.Ordinal);
        }
        finally
        {
            folder.Delete(recursive: true);
        }
    }

    // "Could not find an implementation for Conv(11) node with name 'conv1'"
    [GeneratedRegex(@"Could not find an implementation for ([A-Za-z0-9_]+)\(\d+\)")]
    private static partial Regex NoKernel();

    // "Type Error: Type (tensor(float16)) of input parameter (x) of operator (Foo) in node (n) is invalid."
    [GeneratedRegex(@"Type Error: .*? of operator \(([A-Za-z0-9_]+)\)")]
    private static partial Regex TypeError();

    private static string FirstLine(string message) => message.Split('\n')[0].Trim();

    private static DataType? ToDataType(TensorElementType type) => type switch
    {
        TensorElementType.Float => DataType.Float,
        TensorElementType.Float16 => DataType.Float16,
        TensorElementType.BFloat16 => DataType.Bfloat16,
        TensorElementType.Double => DataType.Double,
        TensorElementType.Int8 => DataType.Int8,
        TensorElementType.UInt8 => DataType.Uint8,
        TensorElementType.Int16 => DataType.Int16,
        TensorElementType.UInt16 => DataType.Uint16,
        TensorElementType.Int32 => DataType.Int32,
        TensorElementType.UInt32 => DataType.Uint32,
        TensorElementType.Int64 => DataType.Int64,
        TensorElementType.UInt64 => DataType.Uint64,
        TensorElementType.Bool => DataType.Bool,
        TensorElementType.String => DataType.String,
        _ => null,
    };
}
