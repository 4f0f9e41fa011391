using System.CommandLine;
using System.Globalization;
using ModelCompression.Graph;
using ModelCompression.Onnx;

namespace ModelCompression.Cli.Commands;

/// <summary><c>compress-model inspect model.onnx</c>: the weight table (layer, op, shape, parameters, sparsity, storage type).</summary>
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

    /// <summary>
    /// One row per learned tensor as the computation reads it (<see cref="ModelWeights"/>): an int8 weight behind its
    /// DequantizeLinear, a compactly stored one at its dense shape, with the element type it is stored in.
    /// </summary>
    public static void Write(OnnxModel model, TextWriter output)
    {
        var weights = ModelWeights.Find(model);
        var rows = new List<string[]> { new[] { "layer", "op", "weight", "shape", "params", "zeros", "stored as" } };
        foreach (var w in weights)
            rows.Add([Passes.CompressionContext.LayerName(w.Consumer), w.Consumer.OpType, w.Value, w.Dims is null ? "?" : "[" + string.Join("x", w.Dims) + "]",
                w.Elements.ToString("N0", CultureInfo.InvariantCulture), w.NonZeros is { } nz ? Percent(w.Elements - nz, w.Elements) : "?",
                ElementTypes.Name(w.StoredType) + (w.StoredName == w.Value ? "" : $" ({w.StoredName})")]);
        var widths = Enumerable.Range(0, rows[0].Length).Select(c => rows.Max(r => r[c].Length)).ToArray();
        foreach (var row in rows) output.WriteLine(string.Join("  ", row.Select((cell, c) => c is 4 or 5 ? cell.PadLeft(widths[c]) : cell.PadRight(widths[c]))).TrimEnd());
        var total = weights.Sum(w => w.Elements);
        var known = weights.Where(w => w.NonZeros is not null).ToList();
        var zeros = known.Sum(w => w.Elements - w.NonZeros!.Value);
        output.WriteLine($"parameters: {total.ToString("N0", CultureInfo.InvariantCulture)} in {weights.Count} tensors, " +
            $"{Percent(zeros, known.Sum(w => w.Elements))} zeros{(known.Count < weights.Count ? $" (of the {known.Count} tensors whose storage tells)" : "")}");
    }

    private static string Percent(long part, long whole) => (whole == 0 ? 0 : 100.0 * part / whole).ToString("0.0", CultureInfo.InvariantCulture) + " %";
}
