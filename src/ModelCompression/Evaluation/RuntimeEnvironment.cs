using System.Runtime.InteropServices;
using ModelCompression.Runtime;

namespace ModelCompression.Evaluation;

/// <summary>What the gate's numbers hold for: runtime, provider, optimization level, CPU and its instruction sets, threads.</summary>
public sealed record RuntimeEnvironment(
    string OnnxRuntimeVersion,
    string OnnxRuntimeLibrary,
    string ExecutionProvider,
    string GraphOptimizationLevel,
    string Cpu,
    IReadOnlyList<string> InstructionSets,
    int IntraOpThreads,
    int ProcessorCount,
    string OperatingSystem,
    string DotnetVersion)
{
    private static readonly string[] InterestingFlags =
        ["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "neon", "asimd", "asimddp"];

    public static RuntimeEnvironment Capture(RuntimeOptions runtime) => new(
        OnnxRuntimeLoader.Version(),
        OnnxRuntimeLoader.NativeLibraryPath() is { } path ? Path.GetFileName(path) + (OnnxRuntimeLoader.LoadedLibrary == "bundled" ? " (bundled)" : " (" + path + ")") : "unknown",
        runtime.Provider.ToString(),
        runtime.OptimizationLevel.ToString(),
        CpuModel(),
        CpuFlags(),
        runtime.Threads,
        Environment.ProcessorCount,
        RuntimeInformation.OSDescription,
        Environment.Version.ToString());

    private static string CpuModel()
    {
        try
        {
            if (File.Exists("/proc/cpuinfo"))
                foreach (var line in File.ReadLines("/proc/cpuinfo"))
                    if (line.StartsWith("model name", StringComparison.Ordinal)) return line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException) { }
        return RuntimeInformation.ProcessArchitecture.ToString();
    }

    private static IReadOnlyList<string> CpuFlags()
    {
        try
        {
            if (File.Exists("/proc/cpuinfo"))
                foreach (var line in File.ReadLines("/proc/cpuinfo"))
                    if (line.StartsWith("flags", StringComparison.Ordinal) || line.StartsWith("Features", StringComparison.Ordinal))
                    {
                        var flags = line[(line.IndexOf(':') + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries).ToHashSet(StringComparer.Ordinal);
                        return InterestingFlags.Where(flags.Contains).ToList();
                    }
        }
        catch (IOException) { }
        var list = new List<string>();
        if (System.Runtime.Intrinsics.X86.Avx2.IsSupported) list.Add("avx2");
        if (System.Runtime.Intrinsics.X86.Avx512F.IsSupported) list.Add("avx512f");
        if (System.Runtime.Intrinsics.X86.AvxVnni.IsSupported) list.Add("avx_vnni");
        if (System.Runtime.Intrinsics.Arm.AdvSimd.IsSupported) list.Add("neon");
        return list;
    }
}
