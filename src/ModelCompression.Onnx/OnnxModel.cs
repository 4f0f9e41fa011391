using Google.Protobuf;
using ModelCompression.Onnx.Protobuf;
using DataType = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataType;
using DataLocation = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataLocation;

namespace ModelCompression.Onnx;

/// <summary>How <see cref="OnnxModel.Save(string, SaveOptions?)"/> lays a model out on disk.</summary>
public sealed record SaveOptions
{
    /// <summary>Tensors of at least this many bytes go to a side file; null keeps every tensor inside the .onnx file.</summary>
    public long? ExternalizeThreshold { get; init; }

    /// <summary>Side file name, relative to the model's folder; defaults to "&lt;model file name&gt;.data".</summary>
    public string? ExternalDataFileName { get; init; }
}

/// <summary>
/// An ONNX model: the protobuf message plus the folder its external data is resolved against. Tensors stored
/// outside the file are memory-mapped on first access, never copied into the message.
/// </summary>
public sealed class OnnxModel : IDisposable
{
    /// <summary>Protobuf cannot serialize a single message past 2 GB; beyond it tensors must be externalized.</summary>
    public const long ProtobufLimit = int.MaxValue;

    private readonly ExternalDataStore _store;
    private readonly bool _ownsStore;
    private SpillFile? _spill;

    private OnnxModel(ModelProto proto, ExternalDataStore store, bool ownsStore)
    {
        Proto = proto;
        _store = store;
        _ownsStore = ownsStore;
    }

    public ModelProto Proto { get; }
    public GraphProto Graph => Proto.Graph;
    public string BaseDirectory => _store.BaseDirectory;

    public static OnnxModel Load(string path)
    {
        byte[] bytes;
        try
        {
            var info = new FileInfo(path);
            if (!info.Exists) throw new OnnxFormatException($"'{path}': file not found");
            if (info.Length > ProtobufLimit) throw new OnnxFormatException($"'{path}': {info.Length} bytes is past protobuf's 2 GB message limit; weights that large must be stored as external data");
            bytes = File.ReadAllBytes(path);
        }
        catch (IOException e) { throw new OnnxFormatException($"'{path}': {e.Message}", e); }
        catch (UnauthorizedAccessException e) { throw new OnnxFormatException($"'{path}': {e.Message}", e); }
        return Parse(bytes, Path.GetDirectoryName(Path.GetFullPath(path))!, Path.GetFileName(path));
    }

    public static OnnxModel Load(Stream stream, string? baseDirectory = null)
    {
        using var buffer = new MemoryStream();
        stream.CopyTo(buffer);
        return Parse(buffer.ToArray(), baseDirectory ?? Directory.GetCurrentDirectory(), "stream");
    }

    public static OnnxModel Parse(byte[] bytes, string baseDirectory, string displayName = "model")
    {
        ModelProto proto;
        try
        {
            // Parsing from an array bounds every length prefix by the bytes that are really there: a corrupt
            // length cannot trigger a huge allocation.
            proto = ModelProto.Parser.ParseFrom(bytes);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new OnnxFormatException($"'{displayName}' is not a valid ONNX model (truncated or corrupt protobuf: {e.Message})", e);
        }
        if (bytes.Length == 0 || proto.Graph is null)
            throw new OnnxFormatException($"'{displayName}' is not a valid ONNX model: it has no graph");
        if (!proto.HasIrVersion || proto.IrVersion <= 0)
            throw new OnnxFormatException($"'{displayName}' is not a valid ONNX model: ir_version is missing");
        CheckSubgraphDepth(proto, displayName);
        return new OnnxModel(proto, new ExternalDataStore(baseDirectory), ownsStore: true);
    }

    /// <summary>
    /// Deepest nesting of subgraphs (If/Loop/Scan bodies inside bodies) a model may have. Real models nest a few
    /// levels; the passes walk subgraphs recursively, so a crafted model is stopped here with a clear error.
    /// </summary>
    public const int MaxSubgraphDepth = 16;

    private static void CheckSubgraphDepth(ModelProto proto, string displayName)
    {
        // Iterative, so the check itself cannot recurse without bound.
        var pending = new Stack<(GraphProto Graph, int Depth)>();
        pending.Push((proto.Graph, 0));
        foreach (var f in proto.Functions)
            foreach (var g in f.Node.SelectMany(n => n.Attribute).SelectMany(a => a.G is null ? a.Graphs : a.Graphs.Prepend(a.G)))
                pending.Push((g, 1));
        while (pending.Count > 0)
        {
            var (graph, depth) = pending.Pop();
            if (depth > MaxSubgraphDepth)
                throw new OnnxFormatException($"'{displayName}' is not a valid ONNX model: subgraphs nested more than {MaxSubgraphDepth} levels deep");
            foreach (var a in graph.Node.SelectMany(n => n.Attribute))
            {
                if (a.G is not null) pending.Push((a.G, depth + 1));
                foreach (var g in a.Graphs) pending.Push((g, depth + 1));
            }
        }
    }

    /// <summary>A deep copy of the message that shares this model's external data (the original must outlive it).</summary>
    public OnnxModel Clone() => new(Proto.Clone(), _store, ownsStore: false);

    /// <summary>A view of the tensor's elements, wherever they are stored.</summary>
    public TensorData GetTensor(TensorProto tensor)
    {
        if (tensor.HasDataLocation && tensor.DataLocation == DataLocation.External)
        {
            var expected = ElementTypes.ByteCount((DataType)tensor.DataType, Tensors.ElementCount(tensor));
            return new TensorData(tensor, _store.Read(tensor, expected), hasBytes: true);
        }
        return Tensors.View(tensor);
    }

    public float[] ReadFloats(TensorProto tensor) => GetTensor(tensor).ToFloatArray();

    /// <summary>
    /// Lets the pages of a tensor's external data leave this process's resident set once it has been read (the data
    /// stays readable: the next access maps the pages again). Nothing for tensors stored in the message.
    /// </summary>
    public void ReleasePages(TensorProto tensor)
    {
        if (tensor.HasDataLocation && tensor.DataLocation == DataLocation.External) _store.Release(tensor);
    }

    /// <summary>Like <see cref="ReleasePages(TensorProto)"/> for every external-data page mapped so far.</summary>
    public void ReleasePages() => _store.ReleaseAll();

    public long OpsetVersion(string domain = "")
    {
        foreach (var opset in Proto.OpsetImport)
            if ((opset.Domain ?? "") == domain || (domain == "" && opset.Domain == "ai.onnx")) return opset.Version;
        return 0;
    }

    /// <summary>Checks every tensor's bytes can be reached (external files exist, ranges fit) and match its shape.</summary>
    public void ValidateTensors()
    {
        foreach (var tensor in AllTensors(Proto)) _ = GetTensor(tensor);
    }

    /// <summary>
    /// Writes the model. Output goes to temporary files in the target folder that are renamed into place only when
    /// complete, so a failure never leaves a half-written model.
    /// </summary>
    public void Save(string path, SaveOptions? options = null)
    {
        options ??= new SaveOptions();
        path = Path.GetFullPath(path);
        var directory = Path.GetDirectoryName(path)!;
        Directory.CreateDirectory(directory);
        var dataFileName = options.ExternalDataFileName ?? Path.GetFileName(path) + ".data";
        if (options.ExternalizeThreshold is not null) ExternalDataStore.ResolveLocation(directory, "(save)", dataFileName);

        var output = Proto.Clone();
        // Temporary names of their own, so two saves to one path (or a crashed one's leftovers) never mix files.
        var token = TempFiles.NewToken();
        var dataTemp = options.ExternalizeThreshold is null ? null : $"{path}.data.{token}.tmp";
        var modelTemp = $"{path}.{token}.tmp";
        try
        {
            long externalBytes = 0;
            using (var data = dataTemp is null ? null : new FileStream(dataTemp, FileMode.Create, FileAccess.Write))
            {
                foreach (var tensor in AllTensors(output))
                {
                    var isExternal = tensor.HasDataLocation && tensor.DataLocation == DataLocation.External;
                    var view = GetTensor(tensor);
                    if (!view.HasRawBytes) continue; // typed fields: stays as it is
                    var bytes = view.RawBytes;
                    if (data is not null && bytes.Length >= options.ExternalizeThreshold)
                    {
                        // Align each tensor to 4 KiB so the runtime can memory-map it.
                        var offset = (data.Position + 4095) / 4096 * 4096;
                        data.Position = offset;
                        data.Write(bytes);
                        // Read once from the source's map: its pages need not stay in this process's resident set.
                        if (isExternal) _store.Release(tensor);
                        tensor.ClearRawData();
                        tensor.DataLocation = DataLocation.External;
                        ExternalDataInfo.Write(tensor.ExternalData, dataFileName, offset, bytes.Length);
                        externalBytes += bytes.Length;
                    }
                    else if (isExternal)
                    {
                        tensor.RawData = ByteString.CopyFrom(bytes);
                        tensor.ExternalData.Clear();
                        tensor.ClearDataLocation();
                    }
                }
            }
            var size = output.CalculateSize();
            if (size < 0 || size > ProtobufLimit)
                throw new OnnxFormatException($"model is {(size < 0 ? "over 2 GB" : size + " bytes")} inline, past protobuf's 2 GB limit: save it with an externalization threshold");
            using (var file = new FileStream(modelTemp, FileMode.Create, FileAccess.Write))
            using (var coded = new CodedOutputStream(file))
            {
                output.WriteTo(coded);
            }
            if (dataTemp is not null)
            {
                if (externalBytes > 0) File.Move(dataTemp, Path.Combine(directory, dataFileName), overwrite: true);
                else File.Delete(dataTemp);
            }
            File.Move(modelTemp, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(modelTemp)) File.Delete(modelTemp);
            if (dataTemp is not null && File.Exists(dataTemp)) File.Delete(dataTemp);
        }
    }

    /// <summary>The model as bytes with every tensor inline (for ONNX Runtime sessions created from memory).</summary>
    public byte[] ToBytes()
    {
        var output = Proto.Clone();
        foreach (var tensor in AllTensors(output))
        {
            if (!(tensor.HasDataLocation && tensor.DataLocation == DataLocation.External)) continue;
            tensor.RawData = ByteString.CopyFrom(GetTensor(tensor).RawBytes);
            tensor.ExternalData.Clear();
            tensor.ClearDataLocation();
        }
        var size = output.CalculateSize();
        if (size < 0 || size > ProtobufLimit) throw new OnnxFormatException("model is past protobuf's 2 GB limit inline; save it with external data and load it from its path");
        return output.ToByteArray();
    }

    /// <summary>Whether any tensor stores its data in an external file the model names (not in a spill file).</summary>
    public bool HasExternalData() => AllTensors(Proto).Any(t => IsExternal(t) && !IsSpilled(t));

    private static bool IsExternal(TensorProto t) => t.HasDataLocation && t.DataLocation == DataLocation.External;

    private bool IsSpilled(TensorProto t) => IsExternal(t) && _store.Spill(ExternalDataInfo.Parse(t).Location) is not null;

    /// <summary>
    /// Moves the bytes of every initializer of the main graph held in memory and at least <paramref name="minBytes"/>
    /// long to a private spill file <c>&lt;pathPrefix&gt;.~pid-guid.spill</c> (in the folder the output goes to, not the source's):
    /// weights a pass has built then cost page cache, not heap, until the model is saved. Reading, saving and
    /// runtime sessions treat them as before; the file goes with this model (see <see cref="SpillFile"/>). Returns the
    /// bytes moved.
    /// </summary>
    public long Spill(string pathPrefix, long minBytes)
    {
        long moved = 0;
        foreach (var tensor in Graph.Initializer)
        {
            if (IsExternal(tensor) || !tensor.HasRawData || tensor.RawData.Length < minBytes) continue;
            if (_spill is null)
            {
                _spill = new SpillFile(pathPrefix);
                _store.Register(_spill);
            }
            var length = tensor.RawData.Length;
            var offset = _spill.Append(tensor.RawData.Span);
            tensor.ClearRawData();
            tensor.DataLocation = DataLocation.External;
            ExternalDataInfo.Write(tensor.ExternalData, _spill.Location, offset, length);
            moved += length;
        }
        return moved;
    }

    /// <summary>
    /// Bytes of the message with every tensor inline except those in the model's own external files: what a save
    /// without a side file writes (spilled tensors count, to within the length prefixes of the messages that hold them;
    /// past 2 GB of message it is <see cref="long.MaxValue"/>).
    /// </summary>
    public long InlineSize()
    {
        var size = Proto.CalculateSize();
        if (size < 0) return long.MaxValue;
        // Each spilled tensor grows by its bytes and by the longer length prefix of its message.
        static long Framed(long size) => size + CodedOutputStream.ComputeLengthSize((int)Math.Min(size, int.MaxValue));
        var spilled = AllTensors(Proto).Where(IsSpilled).Sum(t => Framed(InlineSize(t)) - Framed(t.CalculateSize()));
        return size + spilled;
    }

    /// <summary>
    /// Serialized bytes of the tensor with its data inline, wherever the data is now: what it costs in a model saved
    /// without a side file (a tensor's own <c>CalculateSize</c> counts only the reference of external data).
    /// </summary>
    public long InlineSize(TensorProto tensor)
    {
        if (!IsExternal(tensor)) return tensor.CalculateSize();
        var reference = tensor.Clone();
        reference.ExternalData.Clear();
        reference.ClearDataLocation();
        var length = ElementTypes.ByteCount((DataType)tensor.DataType, Tensors.ElementCount(tensor));
        // raw_data (field 9): a one-byte tag, the length, the bytes.
        return reference.CalculateSize() + 1 + CodedOutputStream.ComputeLengthSize((int)Math.Min(length, int.MaxValue)) + length;
    }

    /// <summary>A copy of the message with the spilled tensors inline again (null when there are none).</summary>
    private ModelProto? WithSpilledInline()
    {
        if (!AllTensors(Proto).Any(IsSpilled)) return null;
        var output = Proto.Clone();
        foreach (var tensor in AllTensors(output).Where(IsSpilled))
        {
            tensor.RawData = ByteString.CopyFrom(GetTensor(tensor).RawBytes);
            _store.Release(tensor);
            tensor.ExternalData.Clear();
            tensor.ClearDataLocation();
        }
        return output;
    }

    /// <summary>
    /// The message as bytes with external-data references kept as they are (relative to <see cref="BaseDirectory"/>):
    /// for ONNX Runtime sessions created from memory that are told that folder, so weights are neither copied into
    /// the message nor bound by protobuf's 2 GB limit.
    /// </summary>
    /// <param name="inlineSpilled">Whether spilled tensors go inline (a runtime reads external data from the model's
    /// folder); false keeps their references, for a runtime handed <see cref="MapExternalData"/> as in-memory files.</param>
    public byte[] ToBytesWithExternalReferences(bool inlineSpilled = true)
    {
        // Checked before the spilled bytes are copied back in: they may be gigabytes.
        if (inlineSpilled && InlineSize() > ProtobufLimit) throw new OnnxFormatException("model is past protobuf's 2 GB limit with the weights written so far inline, even with its external data left out");
        var message = (inlineSpilled ? WithSpilledInline() : null) ?? Proto;
        var size = message.CalculateSize();
        if (size < 0 || size > ProtobufLimit) throw new OnnxFormatException("model is past protobuf's 2 GB limit even with its external data left out");
        return message.ToByteArray();
    }

    /// <summary>Whether a tensor's bytes are in this model's spill file (see <see cref="Spill"/>).</summary>
    public bool HasSpilledData() => AllTensors(Proto).Any(IsSpilled);

    /// <summary>
    /// Every external-data file this model's tensors name, spill files included, each mapped whole under the location
    /// the tensors carry: what a runtime given <see cref="ToBytesWithExternalReferences"/> with the spilled references
    /// kept reads them from. Null when one is empty (nothing to map). The caller disposes the maps once the runtime
    /// has let go of them.
    /// </summary>
    public IReadOnlyList<ExternalFileMap>? MapExternalData()
    {
        var maps = new List<ExternalFileMap>();
        try
        {
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var tensor in AllTensors(Proto).Where(IsExternal))
            {
                var location = ExternalDataInfo.Parse(tensor).Location;
                if (!seen.Add(location)) continue;
                maps.Add(_store.MapWhole(tensor.Name, location));
                if (maps[^1].Length > 0) continue;
                foreach (var map in maps) map.Dispose();
                return null;
            }
            return maps;
        }
        catch
        {
            foreach (var map in maps) map.Dispose();
            throw;
        }
    }

    /// <summary>Every tensor in the model: initializers, sparse initializers, attribute tensors, subgraphs, functions.</summary>
    public static IEnumerable<TensorProto> AllTensors(ModelProto model)
    {
        foreach (var t in AllTensors(model.Graph)) yield return t;
        foreach (var f in model.Functions)
            foreach (var n in f.Node)
                foreach (var t in AttributeTensors(n)) yield return t;
        foreach (var training in model.TrainingInfo)
        {
            if (training.Initialization is not null) foreach (var t in AllTensors(training.Initialization)) yield return t;
            if (training.Algorithm is not null) foreach (var t in AllTensors(training.Algorithm)) yield return t;
        }
    }

    public static IEnumerable<TensorProto> AllTensors(GraphProto graph)
    {
        foreach (var t in graph.Initializer) yield return t;
        foreach (var s in graph.SparseInitializer)
        {
            if (s.Values is not null) yield return s.Values;
            if (s.Indices is not null) yield return s.Indices;
        }
        foreach (var n in graph.Node)
            foreach (var t in AttributeTensors(n)) yield return t;
    }

    private static IEnumerable<TensorProto> AttributeTensors(NodeProto node)
    {
        foreach (var a in node.Attribute)
        {
            if (a.T is not null) yield return a.T;
            foreach (var t in a.Tensors) yield return t;
            if (a.SparseTensor is not null)
            {
                if (a.SparseTensor.Values is not null) yield return a.SparseTensor.Values;
                if (a.SparseTensor.Indices is not null) yield return a.SparseTensor.Indices;
            }
            if (a.G is not null) foreach (var t in AllTensors(a.G)) yield return t;
            foreach (var g in a.Graphs) foreach (var t in AllTensors(g)) yield return t;
        }
    }

    /// <summary>Bytes on disk of a saved model: the .onnx file plus every external-data file it names.</summary>
    public static long FileSizeWithExternalData(string path)
    {
        using var model = Load(path);
        return new FileInfo(path).Length + model.ExternalDataFiles().Sum(f => new FileInfo(f).Length);
    }

    /// <summary>The external-data files this model names, as full paths, each once.</summary>
    public IReadOnlyList<string> ExternalDataFiles()
    {
        var files = new List<string>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in AllTensors(Proto))
        {
            if (!IsExternal(t) || IsSpilled(t)) continue;
            var info = ExternalDataInfo.Parse(t);
            if (seen.Add(info.Location)) files.Add(ExternalDataStore.ResolveLocation(BaseDirectory, t.Name, info.Location));
        }
        return files;
    }

    public void Dispose()
    {
        if (_spill is not null)
        {
            _store.Unregister(_spill);
            _spill.Dispose();
            _spill = null;
        }
        if (_ownsStore) _store.Dispose();
    }
}
