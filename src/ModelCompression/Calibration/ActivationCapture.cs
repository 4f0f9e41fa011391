using ModelCompression.Data;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Runtime;

namespace ModelCompression.Calibration;

/// <summary>
/// Captures intermediate float tensors through ONNX Runtime: the requested values become extra graph outputs of a
/// copy of the model, which then runs batch by batch. Each batch is handed to the caller and dropped, so memory
/// stays bounded by one batch whatever the size of the data (callers keep running statistics).
/// </summary>
public static class ActivationCapture
{
    public static void Run(OnnxModel model, IReadOnlyList<string> valueNames, Dataset data, RuntimeOptions runtime, int batchSize,
        Action<IReadOnlyDictionary<string, FloatTensor>> onBatch, CancellationToken cancellation = default, IProgress<double>? progress = null)
    {
        if (valueNames.Count == 0) return;
        var names = valueNames.Distinct().ToList();
        using var session = OnnxRuntimeSession.Create(Probe(model, names), runtime);
        var bound = data.BindTo(ModelInput.FromGraph(model.Graph));
        var done = 0;
        foreach (var batch in bound.Batches(batchSize))
        {
            cancellation.ThrowIfCancellationRequested();
            onBatch(session.Run(batch, names));
            done += batch.Samples;
            progress?.Report((double)done / bound.Count);
        }
    }

    /// <summary>
    /// Like <see cref="Run"/>, over two models with the same inputs (a model being compressed and the
    /// <paramref name="reference"/> it came from): each batch hands over the same values from both, so callers can
    /// accumulate statistics that pair them (cross moments, the error one model's changes cause downstream).
    /// </summary>
    public static void RunPaired(OnnxModel model, OnnxModel reference, IReadOnlyList<string> valueNames, Dataset data, RuntimeOptions runtime, int batchSize,
        Action<IReadOnlyDictionary<string, FloatTensor>, IReadOnlyDictionary<string, FloatTensor>> onBatch, CancellationToken cancellation = default, IProgress<double>? progress = null)
    {
        if (valueNames.Count == 0) return;
        var names = valueNames.Distinct().ToList();
        using var session = OnnxRuntimeSession.Create(Probe(model, names), runtime);
        using var referenceSession = OnnxRuntimeSession.Create(Probe(reference, names), runtime);
        var bound = data.BindTo(ModelInput.FromGraph(model.Graph));
        var done = 0;
        foreach (var batch in bound.Batches(batchSize))
        {
            cancellation.ThrowIfCancellationRequested();
            onBatch(session.Run(batch, names), referenceSession.Run(batch, names));
            done += batch.Samples;
            progress?.Report((double)done / bound.Count);
        }
    }

    /// <summary>
    /// A copy of the model whose outputs are the requested values, cut down to the nodes that compute them: values
    /// early in the graph cost only the layers before them.
    /// </summary>
    private static OnnxModel Probe(OnnxModel model, IReadOnlyList<string> valueNames)
    {
        var probe = model.Clone();
        var existing = new Dictionary<string, ValueInfoProto>(StringComparer.Ordinal);
        foreach (var output in probe.Graph.Output) existing.TryAdd(output.Name, output); // duplicates are rejected at load; a probe never fails on them
        probe.Graph.Output.Clear();
        foreach (var name in valueNames)
        {
            probe.Graph.Output.Add(existing.GetValueOrDefault(name) ?? new ValueInfoProto
            {
                Name = name,
                Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float } },
            });
        }
        new OnnxGraph(probe.Graph).RemoveDeadNodes();
        return probe;
    }
}
