using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using ModelCompression.Data;
using ModelCompression.Diagnostics;
using ModelCompression.Onnx;
using ModelCompression.Policy;

namespace ModelCompression.Runtime;

/// <summary>How sessions are created: execution provider, intra-op threads, graph optimization level.</summary>
public sealed record RuntimeOptions(ExecutionProviderSpec Provider, int Threads = 0, GraphOptimizationLevel OptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL)
{
    /// <summary>
    /// False turns off ONNX Runtime's weight prepacking (a second, kernel-ready copy of every MatMul/Gemm/Conv weight
    /// made at session creation): the gate of a large model holds two sessions at once and would otherwise hold
    /// both models' weights twice.
    /// </summary>
    public bool Prepacking { get; init; } = true;

    public static RuntimeOptions From(CompressionPolicy policy) => new(policy.Execution.ExecutionProvider, policy.Execution.Threads);
}

/// <summary>A float output tensor copied out of ONNX Runtime.</summary>
public sealed record FloatTensor(float[] Data, long[] Shape)
{
    public int Rows => checked((int)Shape[0]);
    public int RowLength => Data.Length / Math.Max(1, Rows);
}

/// <summary>
/// One ONNX Runtime session over a model held in memory. Creation failures map to CM0130 (execution provider) or
/// CM0131 (the runtime rejected the model); the CUDA provider is never silently replaced by the CPU.
/// </summary>
public sealed class OnnxRuntimeSession : IDisposable
{
    private readonly InferenceSession _session;
    private readonly SessionOptions _options;

    private readonly string? _file;
    // Memory the session reads as external data (spill files' maps): released after the session.
    private readonly IReadOnlyList<IDisposable> _external;

    private OnnxRuntimeSession(InferenceSession session, SessionOptions options, string? file, IReadOnlyList<IDisposable> external)
    {
        _session = session;
        _options = options;
        _file = file;
        _external = external;
        InputNames = session.InputNames.ToList();
        OutputNames = session.OutputNames.ToList();
        OutputSymbols = session.OutputMetadata.ToDictionary(p => p.Key, p => (IReadOnlyList<string>)(p.Value.SymbolicDimensions ?? []), StringComparer.Ordinal);
    }

    public IReadOnlyList<string> InputNames { get; }
    public IReadOnlyList<string> OutputNames { get; }
    /// <summary>Per output, each axis's symbolic dimension name (empty when fixed or unnamed).</summary>
    public IReadOnlyDictionary<string, IReadOnlyList<string>> OutputSymbols { get; }

    public static OnnxRuntimeSession Create(byte[] model, RuntimeOptions runtime, string? file = null) =>
        Create(options => new InferenceSession(model, options), runtime, file);

    /// <summary>
    /// A session over a model in memory. A model with external data is handed over with its references kept and
    /// ONNX Runtime reads the data from the model's folder itself, so a model past 2 GB inline can still be run and
    /// its weights are not copied into a serialized message first. Weights the engine has spilled are handed over the
    /// same way, as maps of the spill files (inline where the library cannot take external data from memory).
    /// </summary>
    public static OnnxRuntimeSession Create(OnnxModel model, RuntimeOptions runtime, string? file = null)
    {
        var external = model.HasExternalData();
        var spilled = model.HasSpilledData();
        if (!external && !spilled) return Create(model.ToBytes(), runtime, file);
        var folder = external ? model.BaseDirectory : null;
        // Given files in memory, ONNX Runtime takes every external file from them: the model's own are mapped too.
        if (spilled && InMemoryExternalData.Available && model.MapExternalData() is { } maps)
        {
            try
            {
                var message = model.ToBytesWithExternalReferences(inlineSpilled: false);
                return Create(options =>
                {
                    InMemoryExternalData.Add(options, maps);
                    var session = new InferenceSession(message, options);
                    // ONNX Runtime has copied the weights into the session: the pages it read need not stay resident.
                    foreach (var map in maps) map.ReleasePages();
                    return session;
                }, runtime, file, folder, maps);
            }
            catch
            {
                foreach (var map in maps) map.Dispose();
                throw;
            }
        }
        var bytes = model.ToBytesWithExternalReferences();
        return Create(options => new InferenceSession(bytes, options), runtime, file, folder);
    }

    /// <summary>A session over a model file (ONNX Runtime resolves its external data itself).</summary>
    public static OnnxRuntimeSession Create(string path, RuntimeOptions runtime) =>
        Create(options => new InferenceSession(path, options), runtime, path);

    private static OnnxRuntimeSession Create(Func<SessionOptions, InferenceSession> open, RuntimeOptions runtime, string? file, string? externalDataFolder = null, IReadOnlyList<IDisposable>? external = null)
    {
        var options = CreateOptions(runtime, file);
        // Where a model given as bytes finds its external data (ONNX Runtime's session option for exactly this).
        if (externalDataFolder is not null) options.AddSessionConfigEntry("session.model_external_initializers_file_folder_path", externalDataFolder);
        try
        {
            return new OnnxRuntimeSession(open(options), options, file, external ?? []);
        }
        catch (Exception e) when (e is OnnxRuntimeException or InMemoryExternalDataException)
        {
            options.Dispose();
            throw new CompressionException(DiagnosticCodes.RuntimeFailure, $"ONNX Runtime cannot load the model: {Detail(e.Message)}", file, e);
        }
    }

    /// <summary>Fails now (CM0130) when the execution provider cannot be loaded, before any work is done.</summary>
    public static void EnsureProviderAvailable(RuntimeOptions runtime, string? file = null) => CreateOptions(runtime, file).Dispose();

    private static SessionOptions CreateOptions(RuntimeOptions runtime, string? file)
    {
        OnnxRuntimeLoader.EnsureConfigured();
        SessionOptions options;
        // ONNX Runtime's own log lines would repeat, uncoded, what the coded error that follows them says.
        try { options = new SessionOptions { GraphOptimizationLevel = runtime.OptimizationLevel, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL }; }
        catch (Exception e) when (e is TypeInitializationException or DllNotFoundException or EntryPointNotFoundException or BadImageFormatException)
        {
            // The first ORT call loads the native library: a file that is not ONNX Runtime (or not one this process
            // can load) fails here, and every later call in this process fails the same way.
            var inner = e is TypeInitializationException { InnerException: { } x } ? x : e;
            throw new CompressionException(DiagnosticCodes.ExecutionProviderUnavailable,
                $"ONNX Runtime cannot be loaded from '{OnnxRuntimeLoader.LoadedLibrary}': {FirstLine(inner.Message).TrimEnd('.')}. Point OnnxRuntimeLibrary at a libonnxruntime of a matching version, or leave it unset to use the bundled one.", file, e);
        }
        if (runtime.Threads > 0) options.IntraOpNumThreads = runtime.Threads;
        if (!runtime.Prepacking) options.AddSessionConfigEntry("session.disable_prepacking", "1");
        if (!runtime.Provider.IsCuda) return options;
        try
        {
            // Fail instead of quietly running nodes the CUDA provider cannot take on the CPU.
            options.AddSessionConfigEntry("session.disable_cpu_ep_fallback", "1");
            options.AppendExecutionProvider_CUDA(runtime.Provider.DeviceId);
            return options;
        }
        catch (Exception e) when (e is OnnxRuntimeException or EntryPointNotFoundException or DllNotFoundException)
        {
            options.Dispose();
            var available = string.Join(", ", OnnxRuntimeLoader.AvailableProviders());
            throw new CompressionException(DiagnosticCodes.ExecutionProviderUnavailable,
                $"the CUDA execution provider (device {runtime.Provider.DeviceId}) cannot be loaded: {FirstLine(e.Message).TrimEnd('.')}. " +
                $"Providers in the loaded ONNX Runtime ({OnnxRuntimeLoader.LoadedLibrary}): {available}. " +
                "Point OnnxRuntimeLibrary at the CUDA build of libonnxruntime (Microsoft.ML.OnnxRuntime.Gpu.Linux) and make sure the NVIDIA driver, CUDA and cuDNN libraries are on the loader path.", file, e);
        }
    }

    /// <summary>Runs one batch and copies the requested float outputs (all outputs when null).</summary>
    public IReadOnlyDictionary<string, FloatTensor> Run(IReadOnlyList<NdArray> inputs, IReadOnlyList<string>? outputNames = null) =>
        Run(inputs, outputNames ?? OutputNames, []).Floats;

    /// <summary>
    /// Runs one batch: <paramref name="floatNames"/> copied out as float (as <see cref="Run(IReadOnlyList{NdArray}, IReadOnlyList{string}?)"/>),
    /// <paramref name="arrayNames"/> in their own element type (null for a type <see cref="NdArray"/> does not hold).
    /// </summary>
    /// <param name="buffers">
    /// Where float outputs may be copied instead of new arrays, per name (filled as they are made): for a caller
    /// done with each batch's outputs before the next run, so large ones (a 4096-input layer's statistics: 67 MB a
    /// batch) are not left behind as garbage.
    /// </param>
    public (IReadOnlyDictionary<string, FloatTensor> Floats, IReadOnlyDictionary<string, NdArray?> Arrays) Run(
        IReadOnlyList<NdArray> inputs, IReadOnlyList<string> floatNames, IReadOnlyList<string> arrayNames, Dictionary<string, float[]>? buffers = null)
    {
        var names = floatNames.Concat(arrayNames).ToList();
        var values = inputs.Select(ToOrtValue).ToList();
        try
        {
            // Disposed (not left to the finalizer): a RunOptions that only the native call still uses can be
            // finalized in the middle of that call in optimized builds, and the run then crashes.
            using var runOptions = new RunOptions();
            using var results = _session.Run(runOptions, inputs.Select(i => i.Name).ToList(), values, names);
            var floats = new Dictionary<string, FloatTensor>(StringComparer.Ordinal);
            var arrays = new Dictionary<string, NdArray?>(StringComparer.Ordinal);
            var k = 0;
            foreach (var result in results)
            {
                var info = result.GetTensorTypeAndShape();
                var name = names[k++];
                if (k > floatNames.Count)
                {
                    arrays[name] = ToArray(name, result, info);
                    continue;
                }
                float[] data = info.ElementDataType switch
                {
                    TensorElementType.Float when buffers is not null => CopyInto(buffers, name, result.GetTensorDataAsSpan<float>()),
                    TensorElementType.Float => result.GetTensorDataAsSpan<float>().ToArray(),
                    TensorElementType.Double => Array.ConvertAll(result.GetTensorDataAsSpan<double>().ToArray(), x => (float)x),
                    TensorElementType.Int64 => Array.ConvertAll(result.GetTensorDataAsSpan<long>().ToArray(), x => (float)x),
                    TensorElementType.Int32 => Array.ConvertAll(result.GetTensorDataAsSpan<int>().ToArray(), x => (float)x),
                    _ => throw new CompressionException(DiagnosticCodes.UnsupportedModel, $"output '{name}' is {info.ElementDataType}; the engine compares float outputs"),
                };
                floats[name] = new FloatTensor(data, info.Shape);
            }
            return (floats, arrays);
        }
        catch (OnnxRuntimeException e)
        {
            // ORT's later lines say which node failed and why; the batch says which samples of which file were fed.
            var where = inputs is Batch batch ? $" (samples {batch.Start}..{batch.Start + batch.Samples - 1} of '{batch.Source}')" : "";
            // The diagnostic's file is the model (the data file when the model was built in memory).
            throw new CompressionException(DiagnosticCodes.RuntimeFailure, $"ONNX Runtime failed to run the model{where}: {Detail(e.Message)}",
                _file ?? (inputs as Batch)?.Source, e);
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }

    /// <summary>Milliseconds per run of the same prepared batch, <paramref name="runs"/> times (inputs bound once, outputs discarded).</summary>
    public double[] Time(IReadOnlyList<NdArray> inputs, int runs)
    {
        var values = inputs.Select(ToOrtValue).ToList();
        var names = inputs.Select(i => i.Name).ToList();
        try
        {
            using var runOptions = new RunOptions();
            var times = new double[runs];
            for (var r = 0; r < runs; r++)
            {
                var start = Stopwatch.GetTimestamp();
                using (_session.Run(runOptions, names, values, OutputNames)) { }
                times[r] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            }
            return times;
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }

    private static float[] CopyInto(Dictionary<string, float[]> buffers, string name, ReadOnlySpan<float> values)
    {
        if (!buffers.TryGetValue(name, out var buffer) || buffer.Length != values.Length) buffers[name] = buffer = new float[values.Length];
        values.CopyTo(buffer);
        return buffer;
    }

    /// <summary>An output tensor as an <see cref="NdArray"/> of its own element type; null for one it does not hold (strings, float16…).</summary>
    private static NdArray? ToArray(string name, OrtValue value, OrtTensorTypeAndShapeInfo info) => info.ElementDataType switch
    {
        TensorElementType.Float => new NdArray(name, info.Shape, ArrayElementType.Float32, value.GetTensorDataAsSpan<float>().ToArray()),
        TensorElementType.Double => new NdArray(name, info.Shape, ArrayElementType.Float64, value.GetTensorDataAsSpan<double>().ToArray()),
        TensorElementType.Int64 => new NdArray(name, info.Shape, ArrayElementType.Int64, value.GetTensorDataAsSpan<long>().ToArray()),
        TensorElementType.Int32 => new NdArray(name, info.Shape, ArrayElementType.Int32, value.GetTensorDataAsSpan<int>().ToArray()),
        TensorElementType.Bool => new NdArray(name, info.Shape, ArrayElementType.Bool, value.GetTensorDataAsSpan<bool>().ToArray()),
        TensorElementType.Int8 => new NdArray(name, info.Shape, ArrayElementType.Int8, value.GetTensorDataAsSpan<sbyte>().ToArray()),
        TensorElementType.UInt8 => new NdArray(name, info.Shape, ArrayElementType.UInt8, value.GetTensorDataAsSpan<byte>().ToArray()),
        _ => null,
    };

    internal static OrtValue ToOrtValue(NdArray array) => array.Data switch
    {
        float[] a => OrtValue.CreateTensorValueFromMemory(a, array.Shape),
        double[] a => OrtValue.CreateTensorValueFromMemory(a, array.Shape),
        long[] a => OrtValue.CreateTensorValueFromMemory(a, array.Shape),
        int[] a => OrtValue.CreateTensorValueFromMemory(a, array.Shape),
        sbyte[] a => OrtValue.CreateTensorValueFromMemory(a, array.Shape),
        byte[] a => OrtValue.CreateTensorValueFromMemory(a, array.Shape),
        short[] a => OrtValue.CreateTensorValueFromMemory(a, array.Shape),
        ushort[] a => OrtValue.CreateTensorValueFromMemory(a, array.Shape),
        uint[] a => OrtValue.CreateTensorValueFromMemory(a, array.Shape),
        ulong[] a => OrtValue.CreateTensorValueFromMemory(a, array.Shape),
        bool[] a => OrtValue.CreateTensorValueFromMemory(a, array.Shape),
        Half[] a => OrtValue.CreateTensorValueFromMemory(Array.ConvertAll(a, h => new Float16(BitConverter.HalfToUInt16Bits(h))), array.Shape),
        _ => throw new InvalidOperationException($"unsupported array type for '{array.Name}'"),
    };

    private static string FirstLine(string message) => message.Split('\n')[0].Trim();

    /// <summary>The whole message, its lines kept (trailing blanks dropped).</summary>
    private static string Detail(string message) => string.Join(Environment.NewLine, message.Split('\n').Select(l => l.TrimEnd()).Where(l => l.Length > 0));

    public void Dispose()
    {
        _session.Dispose();
        _options.Dispose();
        foreach (var view in _external) view.Dispose();
    }
}
