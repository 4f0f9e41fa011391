using ModelCompression.Diagnostics;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;

namespace ModelCompression.Data;

/// <summary>A model input as the data must match it: name, element type and shape (null = symbolic dimension).</summary>
public sealed record ModelInput(string Name, ArrayElementType ElementType, long?[] Shape)
{
    public string ShapeText => "[" + string.Join(",", Shape.Select(d => d?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "?")) + "]";

    /// <summary>The graph inputs that are not initializers (what a caller must feed).</summary>
    public static IReadOnlyList<ModelInput> FromGraph(GraphProto graph)
    {
        var initializers = graph.Initializer.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        var inputs = new List<ModelInput>();
        foreach (var input in graph.Input)
        {
            if (initializers.Contains(input.Name)) continue;
            var tensorType = input.Type?.TensorType ?? throw new CompressionException(DiagnosticCodes.UnsupportedModel, $"input '{input.Name}' is not a tensor");
            var shape = tensorType.Shape?.Dim.Select(d => d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? (long?)d.DimValue : null).ToArray() ?? [];
            inputs.Add(new ModelInput(input.Name, ToArrayType((DataType)tensorType.ElemType, input.Name), shape));
        }
        return inputs;
    }

    public static ArrayElementType ToArrayType(DataType type, string name) => type switch
    {
        DataType.Float => ArrayElementType.Float32,
        DataType.Double => ArrayElementType.Float64,
        DataType.Float16 => ArrayElementType.Float16,
        DataType.Int8 => ArrayElementType.Int8,
        DataType.Uint8 => ArrayElementType.UInt8,
        DataType.Int16 => ArrayElementType.Int16,
        DataType.Uint16 => ArrayElementType.UInt16,
        DataType.Int32 => ArrayElementType.Int32,
        DataType.Uint32 => ArrayElementType.UInt32,
        DataType.Int64 => ArrayElementType.Int64,
        DataType.Uint64 => ArrayElementType.UInt64,
        DataType.Bool => ArrayElementType.Bool,
        _ => throw new CompressionException(DiagnosticCodes.UnsupportedModel, $"input '{name}' has element type {ElementTypes.Name(type)}, which the engine cannot feed"),
    };
}

/// <summary>
/// Samples for calibration or the gate: arrays keyed by model input name, plus optional class labels
/// (<c>label</c>/<c>labels</c>). All arrays share the first (sample) axis.
/// </summary>
public sealed class Dataset
{
    private Dataset(string source, IReadOnlyList<NdArray> inputs, long[]? labels)
    {
        Source = source;
        Inputs = inputs;
        Labels = labels;
        Count = inputs.Count > 0 ? inputs[0].Count : labels?.Length ?? 0;
    }

    public string Source { get; }
    public IReadOnlyList<NdArray> Inputs { get; }
    public long[]? Labels { get; }
    public int Count { get; }

    /// <summary>Loads .npz, .npy or an ONNX test-data folder (<c>test_data_set_N/input_K.pb</c>); failures are CM012x.</summary>
    public static Dataset Load(string path)
    {
        var exists = File.Exists(path) || Directory.Exists(path);
        if (!exists) throw new CompressionException(DiagnosticCodes.DataNotFound, $"data '{path}' does not exist", path);
        IReadOnlyList<NdArray> arrays;
        try
        {
            if (Directory.Exists(path)) arrays = TestDataFolder.Read(path);
            else if (path.EndsWith(".npz", StringComparison.OrdinalIgnoreCase)) arrays = NpyReader.ReadNpz(path);
            else if (path.EndsWith(".npy", StringComparison.OrdinalIgnoreCase)) arrays = [NpyReader.ReadNpy(path)];
            else throw new CompressionException(DiagnosticCodes.InvalidData, $"'{path}' is not .npz, .npy or an ONNX test-data folder", path);
        }
        catch (Exception e) when (e is InvalidDataException or IOException or OnnxFormatException or OverflowException or Google.Protobuf.InvalidProtocolBufferException)
        {
            throw new CompressionException(DiagnosticCodes.InvalidData, $"cannot read data: {e.Message}", path);
        }
        var labelArray = arrays.FirstOrDefault(a => a.Name is "label" or "labels");
        long[]? labels = null;
        if (labelArray is not null)
        {
            if (!labelArray.IsInteger) throw new CompressionException(DiagnosticCodes.InvalidData, $"'{labelArray.Name}' holds {NdArray.TypeName(labelArray.ElementType)}; class ids must be integers", path);
            if (labelArray.Shape.Length != 1) throw new CompressionException(DiagnosticCodes.InvalidData, $"'{labelArray.Name}' has shape {labelArray.ShapeText}; expected one class id per sample", path);
            labels = labelArray.ToInt64s();
        }
        var inputs = arrays.Where(a => a != labelArray).ToList();
        var counts = inputs.Select(a => a.Shape.Length == 0 ? -1 : a.Count).Concat(labels is null ? [] : new[] { labels.Length }).Distinct().ToList();
        if (counts.Count > 1 || counts.Contains(-1))
            throw new CompressionException(DiagnosticCodes.InvalidData,
                $"arrays disagree on the number of samples (first axis): {string.Join(", ", inputs.Select(a => $"{a.Name} {a.ShapeText}").Concat(labels is null ? [] : new[] { $"{labelArray!.Name} [{labels.Length}]" }))}", path);
        return new Dataset(path, inputs, labels);
    }

    /// <summary>
    /// Matches the arrays to the model's inputs by name (a single unnamed .npy feeds a single-input model) and checks
    /// element types and static dimensions; mismatches are CM0122 errors naming the key, the expected and the found.
    /// </summary>
    public Dataset BindTo(IReadOnlyList<ModelInput> modelInputs)
    {
        var bound = new List<NdArray>();
        var errors = new List<Diagnostic>();
        foreach (var input in modelInputs)
        {
            var array = Inputs.FirstOrDefault(a => a.Name == input.Name)
                        ?? (modelInputs.Count == 1 && Inputs.Count == 1 && Source.EndsWith(".npy", StringComparison.OrdinalIgnoreCase) ? Inputs[0] : null);
            if (array is null)
            {
                errors.Add(new Diagnostic(DiagnosticCodes.DataMismatch, Severity.Error,
                    $"no array for model input '{input.Name}' {input.ShapeText} (found: {string.Join(", ", Inputs.Select(a => $"'{a.Name}' {a.ShapeText}"))})", Source));
                continue;
            }
            if (array.ElementType != input.ElementType)
                errors.Add(new Diagnostic(DiagnosticCodes.DataMismatch, Severity.Error,
                    $"'{array.Name}' is {NdArray.TypeName(array.ElementType)} but model input '{input.Name}' expects {NdArray.TypeName(input.ElementType)}", Source));
            var shapeOk = array.Shape.Length == input.Shape.Length && array.Shape.Skip(1).Zip(input.Shape.Skip(1)).All(p => p.Second is null || p.First == p.Second);
            if (!shapeOk)
                errors.Add(new Diagnostic(DiagnosticCodes.DataMismatch, Severity.Error,
                    $"'{array.Name}' has shape {array.ShapeText} but model input '{input.Name}' expects {input.ShapeText} (first axis = samples)", Source));
            bound.Add(array);
        }
        if (errors.Count > 0) throw new CompressionException(errors);
        return new Dataset(Source, bound, Labels);
    }

    /// <summary>At most <paramref name="count"/> samples from the start.</summary>
    public Dataset Take(int count) => count >= Count ? this : new Dataset(Source, Inputs.Select(a => a.Slice(0, count)).ToList(), Labels?[..count]);

    /// <summary>Consecutive batches of at most <paramref name="batchSize"/> samples.</summary>
    public IEnumerable<IReadOnlyList<NdArray>> Batches(int batchSize)
    {
        for (var start = 0; start < Count; start += batchSize)
        {
            var n = Math.Min(batchSize, Count - start);
            yield return Inputs.Select(a => a.Slice(start, n)).ToList();
        }
    }
}

/// <summary>ONNX's test-data folders: <c>test_data_set_N/input_K.pb</c> (TensorProto), sets stacked along a new first axis unless already batched.</summary>
internal static class TestDataFolder
{
    public static IReadOnlyList<NdArray> Read(string folder)
    {
        var sets = Directory.GetDirectories(folder, "test_data_set_*").OrderBy(d => d, StringComparer.Ordinal).ToList();
        if (sets.Count == 0 && Directory.GetFiles(folder, "input_*.pb").Length > 0) sets.Add(folder);
        if (sets.Count == 0) throw new InvalidDataException($"'{folder}' holds no test_data_set_N folders or input_K.pb files");
        var perSet = sets.Select(ReadSet).ToList();
        var names = perSet[0].Select(a => a.Name).ToList();
        if (perSet.Any(s => !s.Select(a => a.Name).SequenceEqual(names)))
            throw new InvalidDataException($"'{folder}': test data sets name different inputs");
        var result = new List<NdArray>();
        for (var k = 0; k < names.Count; k++)
        {
            var parts = perSet.Select(s => s[k]).ToList();
            result.Add(parts.Count == 1 ? parts[0] : Concatenate(parts));
        }
        return result;
    }

    private static List<NdArray> ReadSet(string set)
    {
        var files = Directory.GetFiles(set, "input_*.pb").OrderBy(f => int.TryParse(Path.GetFileNameWithoutExtension(f)[6..], out var k) ? k : int.MaxValue).ToList();
        var arrays = new List<NdArray>();
        for (var k = 0; k < files.Count; k++)
        {
            var tensor = TensorProto.Parser.ParseFrom(File.ReadAllBytes(files[k]));
            var name = string.IsNullOrEmpty(tensor.Name) ? $"input_{k}" : tensor.Name;
            var type = ModelInput.ToArrayType((DataType)tensor.DataType, name);
            var view = Tensors.View(tensor);
            var array = view.HasRawBytes
                ? NdArray.FromBytes(name, tensor.Dims.ToArray(), type, view.RawBytes)
                : new NdArray(name, tensor.Dims.ToArray(), ArrayElementType.Float32, view.ToFloatArray());
            arrays.Add(array);
        }
        return arrays;
    }

    private static NdArray Concatenate(List<NdArray> parts)
    {
        var first = parts[0];
        if (parts.Any(p => !p.Shape.Skip(1).SequenceEqual(first.Shape.Skip(1)) || p.ElementType != first.ElementType))
            throw new InvalidDataException($"test data sets disagree on the shape or type of '{first.Name}'");
        var shape = (long[])first.Shape.Clone();
        shape[0] = parts.Sum(p => p.Shape[0]);
        var data = Array.CreateInstance(first.Data.GetType().GetElementType()!, parts.Sum(p => p.Data.Length));
        var offset = 0;
        foreach (var p in parts) { Array.Copy(p.Data, 0, data, offset, p.Data.Length); offset += p.Data.Length; }
        return new NdArray(first.Name, shape, first.ElementType, data);
    }

}
