using System.Globalization;

namespace ModelCompression.Policy;

/// <summary>Where and how ONNX Runtime runs calibration and the gate, and the seed of every random choice.</summary>
public sealed record ExecutionOptions : IOptions<ExecutionOptions>
{
    public ExecutionProviderSpec ExecutionProvider { get; init; } = ExecutionProviderSpec.Cpu;
    public string? OnnxRuntimeLibrary { get; init; }
    public int BatchSize { get; init; } = 64;
    public int Threads { get; init; }
    public int Seed { get; init; }

    public static OptionsGroup<ExecutionOptions> Group { get; } = new OptionsGroup<ExecutionOptions>("Runtime", 80,
        "ONNX Runtime and randomness.", isTechnique: false)
        .Add("ExecutionProvider", Syntax.Custom("cpu|cuda|cuda:N", ParseProvider, v => v.ToString(),
                () => new() { ["type"] = "string", ["pattern"] = "^(cpu|cuda|cuda:[0-9]+)$" }), SettingScope.Model,
            "Where calibration and the gate run. cuda never falls back to the CPU silently.",
            o => o.ExecutionProvider, (o, v) => o with { ExecutionProvider = v })
        .Add("OnnxRuntimeLibrary", Syntax.ExistingFile, SettingScope.Model,
            "Native ONNX Runtime library to load (e.g. the CUDA build's libonnxruntime.so).",
            o => o.OnnxRuntimeLibrary, (o, v) => o with { OnnxRuntimeLibrary = v })
        .Add("BatchSize", Syntax.Integer(1, 65536), SettingScope.Model,
            "Batch size for calibration, evaluation and latency (a model with a fixed batch dimension runs at that size when smaller; LatencyBatchSize sets the latency batch apart).",
            o => o.BatchSize, (o, v) => o with { BatchSize = v })
        .Add("Threads", Syntax.Integer(0, 1024), SettingScope.Model,
            "ONNX Runtime intra-op threads (0 = its default).",
            o => o.Threads, (o, v) => o with { Threads = v })
        .Add("Seed", Syntax.Integer(0, int.MaxValue), SettingScope.Model,
            "Seed for every random choice (sampling, randomized SVD).",
            o => o.Seed, (o, v) => o with { Seed = v });

    private static ExecutionProviderSpec ParseProvider(string raw)
    {
        var text = raw.ToLowerInvariant();
        if (text == "cpu") return ExecutionProviderSpec.Cpu;
        if (text == "cuda") return new ExecutionProviderSpec("cuda", 0);
        if (text.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(text[5..], NumberStyles.None, CultureInfo.InvariantCulture, out var id) && id < 64)
            return new ExecutionProviderSpec("cuda", id);
        throw new FormatException("expected cpu, cuda or cuda:N");
    }
}
