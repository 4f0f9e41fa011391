using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using ModelCompression.Onnx;

namespace ModelCompression.Runtime;

/// <summary>
/// ONNX Runtime's <c>AddExternalInitializersFromFilesInMemory</c> (C API version 18, ONNX Runtime 1.18 and later),
/// which its .NET binding does not wrap: a session created from bytes reads the tensors whose external data names a
/// given file from a buffer instead. The engine hands it its spill files' maps, so a model whose passes wrote most of
/// its weights runs without those weights copied into the message (nor bound by protobuf's 2 GB).
/// </summary>
internal static unsafe class InMemoryExternalData
{
    // OrtApi is a table of function pointers that only ever grows, so an index holds for every later version.
    private const uint ApiVersion = 18;
    private const int GetErrorMessage = 2;
    private const int ReleaseStatus = 93;
    private const int AddExternalInitializersFromFilesInMemory = 279;

    private static readonly Lazy<nint> Api = new(Resolve);

    /// <summary>Whether the loaded library serves the call (false for a library older than 1.18 or not found).</summary>
    public static bool Available => Api.Value != 0;

    /// <summary>The library ONNX Runtime's own binding uses: resolved as its DllImports are, so never a second copy.</summary>
    private static nint Resolve()
    {
        OnnxRuntimeLoader.EnsureConfigured();
        try
        {
            var library = NativeLibrary.Load("onnxruntime", typeof(OrtEnv).Assembly, null);
            if (!NativeLibrary.TryGetExport(library, "OrtGetApiBase", out var getApiBase)) return 0;
            // struct OrtApiBase { const OrtApi* (*GetApi)(uint32_t version); const char* (*GetVersionString)(void); }
            var apiBase = ((delegate* unmanaged<nint>)getApiBase)();
            if (apiBase == 0) return 0;
            var getApi = *(delegate* unmanaged<uint, nint>*)apiBase;
            return getApi(ApiVersion);
        }
        catch (Exception e) when (e is DllNotFoundException or BadImageFormatException or EntryPointNotFoundException)
        {
            return 0;
        }
    }

    /// <summary>Tells the options that each map's location is that map's bytes. Throws with ONNX Runtime's message.</summary>
    public static void Add(SessionOptions options, IReadOnlyList<ExternalFileMap> files)
    {
        if (files.Count == 0) return;
        var api = (nint*)Api.Value;
        if (api is null) throw new InMemoryExternalDataException("this ONNX Runtime library cannot take external data from memory");
        var names = new nint[files.Count];
        var buffers = new nint[files.Count];
        var lengths = new nuint[files.Count];
        try
        {
            for (var i = 0; i < files.Count; i++)
            {
                // ORTCHAR_T: UTF-16 on Windows, UTF-8 elsewhere.
                names[i] = OperatingSystem.IsWindows() ? Marshal.StringToHGlobalUni(files[i].Location) : Marshal.StringToCoTaskMemUTF8(files[i].Location);
                buffers[i] = files[i].Pointer;
                lengths[i] = (nuint)files[i].Length;
            }
            var add = (delegate* unmanaged<nint, nint*, nint*, nuint*, nuint, nint>)api[AddExternalInitializersFromFilesInMemory];
            nint status;
            bool added = false;
            options.DangerousAddRef(ref added);
            try
            {
                fixed (nint* n = names, b = buffers)
                fixed (nuint* l = lengths)
                    status = add(options.DangerousGetHandle(), n, b, l, (nuint)files.Count);
            }
            finally
            {
                if (added) options.DangerousRelease();
            }
            if (status == 0) return;
            var message = Marshal.PtrToStringUTF8(((delegate* unmanaged<nint, nint>)api[GetErrorMessage])(status)) ?? "unknown error";
            ((delegate* unmanaged<nint, void>)api[ReleaseStatus])(status);
            throw new InMemoryExternalDataException(message);
        }
        finally
        {
            foreach (var name in names)
                if (name != 0)
                {
                    if (OperatingSystem.IsWindows()) Marshal.FreeHGlobal(name);
                    else Marshal.FreeCoTaskMem(name);
                }
        }
    }
}

/// <summary>ONNX Runtime refused the in-memory files (its message).</summary>
internal sealed class InMemoryExternalDataException(string message) : Exception(message);
