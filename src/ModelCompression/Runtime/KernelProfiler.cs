using System.Text.Json;
using Microsoft.ML.OnnxRuntime;
using ModelCompression.Data;
using ModelCompression.Diagnostics;

namespace ModelCompression.Runtime;

/// <summary>One node of the graph ONNX Runtime actually ran (after its fusions), with its kernel and median time.</summary>
public sealed record KernelTiming(string Node, string OpType, string Provider, double MedianMicroseconds);

/// <summary>
/// Which kernels ONNX Runtime runs for a model and how long each takes, from its own profiler: the way to check
/// that a QDQ node group really fused into an int8 kernel rather than guessing from the graph.
/// </summary>
public static class KernelProfiler
{
    /// <summary>Runs the model <paramref name="runs"/> times on one batch and returns every node's median kernel time, in execution order.</summary>
    public static IReadOnlyList<KernelTiming> Profile(byte[] model, IReadOnlyList<NdArray> batch, RuntimeOptions runtime, int runs = 10)
    {
        OnnxRuntimeLoader.EnsureConfigured();
        var folder = Directory.CreateTempSubdirectory("modelcompression-profile-");
        try
        {
            string file;
            try
            {
                // The prefix must be set before profiling is enabled: enabling passes the prefix to the runtime.
                using var options = new SessionOptions
                {
                    GraphOptimizationLevel = runtime.OptimizationLevel,
                    ProfileOutputPathPrefix = Path.Combine(folder.FullName, "profile"),
                    EnableProfiling = true,
                    LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL,
                };
                if (runtime.Threads > 0) options.IntraOpNumThreads = runtime.Threads;
                if (runtime.Provider.IsCuda) options.AppendExecutionProvider_CUDA(runtime.Provider.DeviceId);
                using var session = new InferenceSession(model, options);
                var values = batch.Select(OnnxRuntimeSession.ToOrtValue).ToList();
                try
                {
                    using var runOptions = new RunOptions();
                    for (var r = 0; r < runs; r++)
                        using (session.Run(runOptions, batch.Select(a => a.Name).ToList(), values, session.OutputNames)) { }
                }
                finally
                {
                    foreach (var v in values) v.Dispose();
                }
                file = session.EndProfiling();
            }
            catch (OnnxRuntimeException e)
            {
                throw new CompressionException(DiagnosticCodes.RuntimeFailure, $"ONNX Runtime failed to profile the model: {e.Message.Split('\n')[0]}", null, e);
            }
            return Parse(File.ReadAllText(file));
        }
        finally
        {
            folder.Delete(recursive: true);
        }
    }

    /// <summary>Kernel events (<c>cat: Node</c>, <c>name: &lt;node&gt;_kernel_time</c>) of an ONNX Runtime profile, one row per node.</summary>
    internal static IReadOnlyList<KernelTiming> Parse(string json)
    {
        using var document = JsonDocument.Parse(json);
        var events = document.RootElement.ValueKind == JsonValueKind.Array ? document.RootElement : document.RootElement.GetProperty("traceEvents");
        var order = new List<string>();
        var byNode = new Dictionary<string, (string Op, string Provider, List<double> Durations)>(StringComparer.Ordinal);
        foreach (var e in events.EnumerateArray())
        {
            if (!e.TryGetProperty("cat", out var cat) || cat.GetString() != "Node") continue;
            var name = e.GetProperty("name").GetString() ?? "";
            if (!name.EndsWith("_kernel_time", StringComparison.Ordinal) || !e.TryGetProperty("args", out var args)) continue;
            var node = name[..^"_kernel_time".Length];
            if (!byNode.TryGetValue(node, out var entry))
            {
                entry = (args.GetProperty("op_name").GetString() ?? "?", args.TryGetProperty("provider", out var p) ? p.GetString() ?? "" : "", []);
                byNode[node] = entry;
                order.Add(node);
            }
            entry.Durations.Add(e.GetProperty("dur").GetDouble());
        }
        return order.Select(n =>
        {
            var (op, provider, durations) = byNode[n];
            durations.Sort();
            return new KernelTiming(n, op, provider, durations[durations.Count / 2]);
        }).ToList();
    }
}
