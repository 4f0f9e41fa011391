using System.CommandLine;
using System.Globalization;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;

namespace ModelCompression.Cli.Commands;

/// <summary><c>compress-model inspect model.onnx</c>: the layer table (op, shape, parameters, sparsity, dtype).</summary>
public static class InspectCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var model = new Argument<string>("model") { Description = "The ONNX model to describe." };
        var command = new Command("inspect", "List the model's layers with weights: op, shape, parameters, sparsity and element type.") { model };
        command.SetAction(parse => CompressModelApp.Guard(error, () =>
        {
            var path = Path.GetFullPath(parse.GetValue(model)!);
            using var onnx = CompressionEngine.LoadChecked(path);
            Write(onnx, output);
            output.WriteLine($"file: {OnnxModel.FileSizeWithExternalData(path):N0} bytes, opset {onnx.OpsetVersion()}, producer {onnx.Proto.ProducerName} {onnx.Proto.ProducerVersion}");
            return ReturnCode.Success;
        }));
        return command;
    }

    public static void Write(OnnxModel model, TextWriter output)
    {
        var graph = new OnnxGraph(model.Graph);
        var rows = new List<string[]> { new[] { "layer", "op", "weight", "shape", "params", "zeros", "dtype" } };
        long total = 0, zeros = 0;
        foreach (var node in graph.Nodes)
        {
            foreach (var input in node.Input.Skip(1))
            {
                var tensor = graph.Initializer(input);
                if (tensor is null || tensor.Dims.Count < 2) continue;
                var view = model.GetTensor(tensor);
                var values = view.ToFloatArray();
                var z = values.LongCount(v => v == 0);
                total += values.Length;
                zeros += z;
                rows.Add([Passes.CompressionContext.LayerName(node), node.OpType, tensor.Name, "[" + string.Join("x", tensor.Dims) + "]",
                    values.Length.ToString("N0", CultureInfo.InvariantCulture), (values.Length == 0 ? 0 : 100.0 * z / values.Length).ToString("0.0", CultureInfo.InvariantCulture) + " %",
                    ElementTypes.Name((TensorProto.Types.DataType)tensor.DataType)]);
            }
        }
        foreach (var sparse in model.Graph.SparseInitializer)
            rows.Add(["(sparse initializer)", "", sparse.Values?.Name ?? "", "[" + string.Join("x", sparse.Dims) + "]", sparse.Dims.Aggregate(1L, (a, b) => a * b).ToString("N0", CultureInfo.InvariantCulture),
                (100.0 - 100.0 * Tensors.ElementCount(sparse.Values ?? new TensorProto()) / Math.Max(1, sparse.Dims.Aggregate(1L, (a, b) => a * b))).ToString("0.0", CultureInfo.InvariantCulture) + " %",
                ElementTypes.Name((TensorProto.Types.DataType)(sparse.Values?.DataType ?? 0))]);
        var widths = Enumerable.Range(0, rows[0].Length).Select(c => rows.Max(r => r[c].Length)).ToArray();
        foreach (var row in rows) output.WriteLine(string.Join("  ", row.Select((cell, c) => c is 4 or 5 ? cell.PadLeft(widths[c]) : cell.PadRight(widths[c]))).TrimEnd());
        output.WriteLine($"weights: {total:N0} parameters in {rows.Count - 1} tensors, {(total == 0 ? 0 : 100.0 * zeros / total).ToString("0.0", CultureInfo.InvariantCulture)} % zeros; all initializers: {CompressionEngine.CountParameters(model):N0} parameters");
    }
}
