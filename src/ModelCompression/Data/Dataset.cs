using ModelCompression.Diagnostics;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;

namespace ModelCompression.Data;

/// <summary>
/// A model input as the data must match it: name, element type, shape (null = symbolic dimension) and, per axis, the
/// dimension's name (<c>dim_param</c>) when it has one.
/// </summary>
public sealed record ModelInput(string Name, ArrayElementType ElementType, long?[] Shape)
{
    /// <summary>Per axis, the symbolic dimension's name (<c>dim_param</c>), or null.</summary>
    public string?[] Symbols { get; init; } = [];

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
            var dims = tensorType.Shape?.Dim.ToList() ?? [];
            var shape = dims.Select(d => d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? (long?)d.DimValue : null).ToArray();
            var symbols = dims.Select(d => d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimParam && d.DimParam.Length > 0 ? d.DimParam : null).ToArray();
            inputs.Add(new ModelInput(input.Name, ToArrayType((DataType)tensorType.ElemType, input.Name), shape) { Symbols = symbols });
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

    /// <summary>The ONNX element type of an array's (the inverse of <see cref="ToArrayType"/>).</summary>
    public static DataType ToDataType(ArrayElementType type) => type switch
    {
        ArrayElementType.Float32 => DataType.Float,
        ArrayElementType.Float64 => DataType.Double,
        ArrayElementType.Float16 => DataType.Float16,
        ArrayElementType.Int8 => DataType.Int8,
        ArrayElementType.UInt8 => DataType.Uint8,
        ArrayElementType.Int16 => DataType.Int16,
        ArrayElementType.UInt16 => DataType.Uint16,
        ArrayElementType.Int32 => DataType.Int32,
        ArrayElementType.UInt32 => DataType.Uint32,
        ArrayElementType.Int64 => DataType.Int64,
        ArrayElementType.UInt64 => DataType.Uint64,
        _ => DataType.Bool,
    };
}

/// <summary>One run's inputs: <see cref="Samples"/> samples starting at sample <see cref="Start"/> of the data file <see cref="Source"/>.</summary>
public sealed class Batch(IReadOnlyList<NdArray> inputs, int start, int samples, string source) : IReadOnlyList<NdArray>
{
    public int Start { get; } = start;
    public int Samples { get; } = samples;
    public string Source { get; } = source;
    public NdArray this[int index] => inputs[index];
    public int Count => inputs.Count;
    public IEnumerator<NdArray> GetEnumerator() => inputs.GetEnumerator();
    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
}

/// <summary>
/// Samples for calibration or the gate: arrays keyed by model input name, plus optional class labels
/// (<c>label</c>/<c>labels</c>). Once bound to a model (<see cref="BindTo"/>) each input has its own sample axis
/// (<see cref="SampleAxes"/>), or none: a scalar or an array laid out exactly as a fully fixed input is fed unchanged
/// with every batch. Before binding, samples are taken to be on the first axis.
/// </summary>
public sealed class Dataset
{
    /// <summary>ONNX test-data sets as read (one run each); merged, or kept apart, when bound.</summary>
    private readonly IReadOnlyList<IReadOnlyList<NdArray>>? _sets;
    /// <summary>Bound test-data sets that cannot be merged (their unbatched inputs differ): each is fed on its own.</summary>
    private readonly IReadOnlyList<Dataset>? _parts;

    private Dataset(string source, IReadOnlyList<NdArray> inputs, long[]? labels, IReadOnlyList<int?>? axes = null, int maxBatch = int.MaxValue, string? batchSymbol = null)
    {
        Source = source;
        Inputs = inputs;
        Labels = labels;
        SampleAxes = axes ?? inputs.Select(a => a.Shape.Length == 0 ? (int?)null : 0).ToList();
        MaxBatch = maxBatch;
        BatchSymbol = batchSymbol;
        var sliced = Inputs.Zip(SampleAxes).FirstOrDefault(p => p.Second is not null);
        Count = sliced.First is { } array ? checked((int)array.Shape[sliced.Second!.Value]) : labels?.Length ?? (inputs.Count > 0 ? 1 : 0);
    }

    private Dataset(string source, IReadOnlyList<IReadOnlyList<NdArray>> sets) : this(source, Merge(sets, null) ?? sets[0], null) => _sets = sets;

    private Dataset(string source, IReadOnlyList<Dataset> parts) : this(source, parts[0].Inputs, null, parts[0].SampleAxes, parts[0].MaxBatch, parts[0].BatchSymbol)
    {
        _parts = parts;
        Count = parts.Sum(p => p.Count);
    }

    public string Source { get; }
    public IReadOnlyList<NdArray> Inputs { get; }
    public long[]? Labels { get; }
    public int Count { get; }
    /// <summary>Per input, the axis that holds samples; null for an input fed unchanged with every batch.</summary>
    public IReadOnlyList<int?> SampleAxes { get; }
    /// <summary>The most samples one run may take: a fixed batch dimension of the model; int.MaxValue when none.</summary>
    public int MaxBatch { get; }
    /// <summary>The name of the symbolic batch dimension, when the model names one (outputs carrying it are joined along it).</summary>
    public string? BatchSymbol { get; }

    /// <summary>Loads .npz, .npy or an ONNX test-data folder (<c>test_data_set_N/input_K.pb</c>); failures are CM012x.</summary>
    public static Dataset Load(string path)
    {
        var exists = File.Exists(path) || Directory.Exists(path);
        if (!exists) throw new CompressionException(DiagnosticCodes.DataNotFound, $"data '{path}' does not exist", path);
        IReadOnlyList<NdArray> arrays;
        try
        {
            if (Directory.Exists(path)) return new Dataset(path, TestDataFolder.Read(path));
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
        // Sample counts are checked when the data is bound: only the model says which axis holds samples.
        return new Dataset(path, arrays.Where(a => a != labelArray).ToList(), labels);
    }

    /// <summary>
    /// Matches the arrays to the model's inputs by name (a single unnamed .npy feeds a single-input model), checks
    /// element types and static dimensions (CM0122 errors naming the key, the expected and the found) and decides
    /// each input's sample axis:
    /// <list type="number">
    /// <item>a scalar input is fed unchanged with every batch;</item>
    /// <item>the batch dimension is the symbolic dimension (<c>dim_param</c>) that most inputs share (at least two);
    /// an input that has it holds its samples on that axis (<c>h</c> [2, batch, 64] on axis 1);</item>
    /// <item>an array laid out exactly as a fully fixed input ([2, 64] for [2, 64]) is fed unchanged with every batch;</item>
    /// <item>otherwise the input's only symbolic axis, or axis 0 when it has none or several.</item>
    /// </list>
    /// A fixed dimension on a sample axis caps the batch (a model fixed at batch 1 runs one sample at a time). All
    /// sliced arrays and the labels must hold the same number of samples (CM0121).
    /// </summary>
    public Dataset BindTo(IReadOnlyList<ModelInput> modelInputs)
    {
        if (_parts is not null) return new Dataset(Source, _parts.Select(p => p.BindTo(modelInputs)).ToList());
        if (_sets is null) return Bind(Source, Inputs, Labels, modelInputs);
        var bound = _sets.Select(set => Bind(Source, set, null, modelInputs)).ToList();
        // One array per input when every set agrees on the inputs fed unchanged: larger batches than one set each.
        return Merge(bound.Select(b => b.Inputs).ToList(), bound[0].SampleAxes) is { } merged
            ? Bind(Source, merged, null, modelInputs)
            : new Dataset(Source, bound);
    }

    private static Dataset Bind(string source, IReadOnlyList<NdArray> arrays, long[]? labels, IReadOnlyList<ModelInput> modelInputs)
    {
        var batchSymbol = modelInputs.SelectMany(i => i.Symbols.OfType<string>().Distinct())
            .GroupBy(s => s, StringComparer.Ordinal).Where(g => g.Count() >= 2)
            .OrderByDescending(g => g.Count()).Select(g => g.Key).FirstOrDefault();
        var bound = new List<NdArray>();
        var axes = new List<int?>();
        var maxBatch = int.MaxValue;
        var errors = new List<Diagnostic>();
        foreach (var input in modelInputs)
        {
            var array = arrays.FirstOrDefault(a => a.Name == input.Name)
                        // Runs feed arrays by name: the unnamed .npy takes the input's (its own is the file name).
                        ?? (modelInputs.Count == 1 && arrays.Count == 1 && source.EndsWith(".npy", StringComparison.OrdinalIgnoreCase)
                            ? new NdArray(input.Name, arrays[0].Shape, arrays[0].ElementType, arrays[0].Data) : null);
            if (array is null)
            {
                errors.Add(new Diagnostic(DiagnosticCodes.DataMismatch, Severity.Error,
                    $"no array for model input '{input.Name}' {input.ShapeText} (found: {string.Join(", ", arrays.Select(a => $"'{a.Name}' {a.ShapeText}"))})", source));
                continue;
            }
            if (array.ElementType != input.ElementType)
                errors.Add(new Diagnostic(DiagnosticCodes.DataMismatch, Severity.Error,
                    $"'{array.Name}' is {NdArray.TypeName(array.ElementType)} but model input '{input.Name}' expects {NdArray.TypeName(input.ElementType)}", source));
            var axis = SampleAxis(input, array, batchSymbol);
            var shapeOk = array.Shape.Length == input.Shape.Length && array.Shape.Zip(input.Shape).Select((p, k) => k == axis || p.Second is null || p.First == p.Second).All(ok => ok);
            if (!shapeOk)
                errors.Add(new Diagnostic(DiagnosticCodes.DataMismatch, Severity.Error,
                    $"'{array.Name}' has shape {array.ShapeText} but model input '{input.Name}' expects {input.ShapeText} ({(axis is { } k ? $"samples on axis {k}" : "fed unchanged with every batch")})", source));
            else if (axis is { } a && input.Shape[a] is { } fixedBatch)
            {
                if (fixedBatch < 1 || array.Shape[a] % fixedBatch != 0)
                    errors.Add(new Diagnostic(DiagnosticCodes.DataMismatch, Severity.Error,
                        $"'{array.Name}' holds {array.Shape[a]} samples on axis {a} but model input '{input.Name}' {input.ShapeText} takes exactly {fixedBatch} per run; give a multiple of {fixedBatch}", source));
                else maxBatch = (int)Math.Min(maxBatch, fixedBatch);
            }
            bound.Add(array);
            axes.Add(axis);
        }
        if (errors.Count > 0) throw new CompressionException(errors);

        var counts = bound.Zip(axes).Where(p => p.Second is not null).Select(p => (Text: $"'{p.First.Name}' {p.First.ShapeText} has {p.First.Shape[p.Second!.Value]} on axis {p.Second}", Count: p.First.Shape[p.Second!.Value])).ToList();
        if (labels is not null) counts.Add(($"the labels have {labels.Length}", labels.Length));
        if (counts.Select(c => c.Count).Distinct().Count() > 1)
            throw new CompressionException(DiagnosticCodes.InvalidData, $"arrays disagree on the number of samples: {string.Join("; ", counts.Select(c => c.Text))}", source);
        // The output axis to join batches along: the shared batch dimension, else the one the sliced inputs agree on.
        var symbol = batchSymbol ?? modelInputs.Zip(axes).Where(p => p.Second is not null).Select(p => p.First.Symbols.ElementAtOrDefault(p.Second!.Value)).Distinct().SingleOrDefault();
        return new Dataset(source, bound, labels, axes, maxBatch, symbol);
    }

    private static int? SampleAxis(ModelInput input, NdArray array, string? batchSymbol)
    {
        if (input.Shape.Length == 0) return null;
        if (batchSymbol is not null && Array.IndexOf(input.Symbols, batchSymbol) is >= 0 and var shared) return shared;
        if (input.Shape.All(d => d is not null) && array.Shape.SequenceEqual(input.Shape.Select(d => d!.Value))) return null;
        var symbolic = Enumerable.Range(0, input.Shape.Length).Where(k => input.Shape[k] is null).ToList();
        return symbolic.Count == 1 ? symbolic[0] : 0;
    }

    /// <summary>Test-data sets joined along each input's sample axis; null when an input fed unchanged differs between sets or a shape does not fit.</summary>
    private static IReadOnlyList<NdArray>? Merge(IReadOnlyList<IReadOnlyList<NdArray>> sets, IReadOnlyList<int?>? axes)
    {
        if (sets.Count == 1) return sets[0];
        var merged = new List<NdArray>();
        for (var k = 0; k < sets[0].Count; k++)
        {
            var parts = sets.Select(s => s[k]).ToList();
            var axis = axes is null ? parts[0].Shape.Length == 0 ? (int?)null : 0 : axes[k];
            if (axis is not { } a)
            {
                if (parts.Any(p => !p.SameAs(parts[0]))) return null;
                merged.Add(parts[0]);
                continue;
            }
            if (parts.Any(p => p.ElementType != parts[0].ElementType || p.Shape.Length != parts[0].Shape.Length
                               || p.Shape.Where((d, i) => i != a && d != parts[0].Shape[i]).Any())) return null;
            merged.Add(NdArray.Concatenate(parts, a));
        }
        return merged;
    }

    /// <summary>At most <paramref name="count"/> samples from the start.</summary>
    public Dataset Take(int count)
    {
        if (count >= Count) return this;
        if (_parts is not null)
        {
            var parts = new List<Dataset>();
            for (var i = 0; count > 0 && i < _parts.Count; count -= _parts[i].Count, i++) parts.Add(_parts[i].Take(count));
            return new Dataset(Source, parts);
        }
        return new Dataset(Source, Inputs.Zip(SampleAxes).Select(p => p.Second is { } a ? p.First.Slice(a, 0, count) : p.First).ToList(), Labels?[..count], SampleAxes, MaxBatch, BatchSymbol);
    }

    /// <summary>Consecutive batches of at most <paramref name="batchSize"/> samples (fewer when the model fixes its batch).</summary>
    public IEnumerable<Batch> Batches(int batchSize)
    {
        if (_parts is not null)
        {
            var offset = 0;
            foreach (var part in _parts)
            {
                foreach (var b in part.Batches(batchSize)) yield return new Batch(b, offset + b.Start, b.Samples, Source);
                offset += part.Count;
            }
            yield break;
        }
        var size = Math.Max(1, Math.Min(batchSize, MaxBatch));
        for (var start = 0; start < Count; start += size)
        {
            var n = Math.Min(size, Count - start);
            yield return new Batch(Inputs.Zip(SampleAxes).Select(p => p.Second is { } a ? p.First.Slice(a, start, n) : p.First).ToList(), start, n, Source);
        }
    }
}

/// <summary>ONNX's test-data folders: <c>test_data_set_N/input_K.pb</c> (TensorProto), one list of arrays per set, each set one run of the model as stored.</summary>
internal static class TestDataFolder
{
    public static IReadOnlyList<IReadOnlyList<NdArray>> Read(string folder)
    {
        var sets = Directory.GetDirectories(folder, "test_data_set_*").OrderBy(d => d, StringComparer.Ordinal).ToList();
        if (sets.Count == 0 && Directory.GetFiles(folder, "input_*.pb").Length > 0) sets.Add(folder);
        if (sets.Count == 0) throw new InvalidDataException($"'{folder}' holds no test_data_set_N folders or input_K.pb files");
        var perSet = sets.Select(ReadSet).ToList();
        var names = perSet[0].Select(a => a.Name).ToList();
        if (perSet.Any(s => !s.Select(a => a.Name).SequenceEqual(names)))
            throw new InvalidDataException($"'{folder}': test data sets name different inputs");
        return perSet;
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
            var array = view.HasRawBytes ? NdArray.FromBytes(name, tensor.Dims.ToArray(), type, view.RawBytes)
                : type == ArrayElementType.Int64 ? new NdArray(name, tensor.Dims.ToArray(), type, tensor.Int64Data.ToArray())
                : type == ArrayElementType.Int32 ? new NdArray(name, tensor.Dims.ToArray(), type, tensor.Int32Data.ToArray())
                : new NdArray(name, tensor.Dims.ToArray(), ArrayElementType.Float32, view.ToFloatArray());
            arrays.Add(array);
        }
        return arrays;
    }


}
