using System.Diagnostics;
using ModelCompression.Data;
using ModelCompression.Evaluation;
using ModelCompression.Onnx;
using ModelCompression.Onnx.Protobuf;
using ModelCompression.Passes;
using ModelCompression.Policy;
using ModelCompression.Pruning;
using ModelCompression.Runtime;

namespace ModelCompression.Bench.Pruning;

/// <summary>
/// The pruning acceptance cases on the Fashion-MNIST fixtures: top-1 accuracy on the 2,000 validation images,
/// seconds per pass, latency side by side (interleaved rounds, batch 64) and bytes on disk, as a Markdown table.
/// </summary>
public static class PruningBenchmark
{
    private static readonly RuntimeOptions Cpu = new(ExecutionProviderSpec.Cpu);

    public static void Run(string dataFolder, TextWriter output)
    {
        var validation = Dataset.Load(Path.Combine(dataFolder, "fmnist_val.npz"));
        var mlp = Path.Combine(dataFolder, "fmnist_mlp.onnx");
        var resNet = Path.Combine(dataFolder, "fmnist_resnet.onnx");
        var baseline = new Dictionary<string, double>
        {
            [mlp] = Accuracy(Load(mlp), validation),
            [resNet] = Accuracy(Load(resNet), validation),
        };
        output.WriteLine($"fp32 accuracy: mlp {baseline[mlp]:P2}, resnet {baseline[resNet]:P2} ({validation.Count} validation images)");
        output.WriteLine();
        output.WriteLine("| case | accuracy | drop (pt) | pass seconds | latency (ms, fp32 → pruned) | ratio |");
        output.WriteLine("|---|---|---|---|---|---|");
        var cases = new (string Name, string Model, (string, string)[] Settings, bool Latency)[]
        {
            ("mlp 80 % magnitude (global)", mlp, [("Sparsity", "0.8"), ("PruneMethod", "magnitude")], false),
            ("mlp 80 % sparsegpt", mlp, [("Sparsity", "0.8"), ("PruneMethod", "sparsegpt")], false),
            ("mlp 90 % magnitude (global)", mlp, [("Sparsity", "0.9"), ("PruneMethod", "magnitude")], false),
            ("mlp 90 % sparsegpt", mlp, [("Sparsity", "0.9"), ("PruneMethod", "sparsegpt")], false),
            ("mlp 90 % sparsegpt, uniform per layer", mlp, [("Sparsity", "0.9"), ("PruneMethod", "sparsegpt"), ("PruneScope", "layer")], false),
            ("resnet 50 % magnitude (global)", resNet, [("Sparsity", "0.5"), ("PruneMethod", "magnitude")], false),
            ("resnet 50 % sparsegpt", resNet, [("Sparsity", "0.5"), ("PruneMethod", "sparsegpt")], false),
            ("resnet 70 % magnitude (global)", resNet, [("Sparsity", "0.7"), ("PruneMethod", "magnitude")], false),
            ("resnet 70 % sparsegpt", resNet, [("Sparsity", "0.7"), ("PruneMethod", "sparsegpt")], false),
            ("resnet 70 % sparsegpt, uniform per layer", resNet, [("Sparsity", "0.7"), ("PruneMethod", "sparsegpt"), ("PruneScope", "layer")], false),
            ("mlp 50 % of hidden neurons, l1", mlp, [("StructuredSparsity", "0.5")], true),
            ("mlp 50 % of hidden neurons, reconstruction", mlp, [("StructuredSparsity", "0.5"), ("StructuredCriterion", "reconstruction")], true),
            ("resnet 30 % of filters, l1", resNet, [("StructuredSparsity", "0.3")], true),
            ("resnet 30 % of filters, apoz", resNet, [("StructuredSparsity", "0.3"), ("StructuredCriterion", "apoz")], true),
            ("resnet 30 % of filters, reconstruction", resNet, [("StructuredSparsity", "0.3"), ("StructuredCriterion", "reconstruction")], true),
        };
        foreach (var (name, path, settings, latency) in cases)
        {
            var (model, seconds) = Compress(path, dataFolder, [.. settings, ("SparseStorage", "false")]);
            var accuracy = Accuracy(model, validation);
            var timing = "";
            var ratio = "";
            if (latency)
            {
                var (original, pruned) = Latency(Load(path), model, validation);
                timing = $"{original:0.000} → {pruned:0.000}";
                ratio = $"{pruned / original:0.00}×";
            }
            output.WriteLine($"| {name} | {accuracy:P2} | {100 * (baseline[path] - accuracy):0.00} | {seconds} | {timing} | {ratio} |");
        }

        output.WriteLine();
        output.WriteLine("| storage | bytes | % of fp32 file | outputs identical to dense |");
        output.WriteLine("|---|---|---|---|");
        foreach (var (name, path, settings) in new (string, string, (string, string)[])[]
        {
            ("mlp 80 % sparsegpt, fp32", mlp, [("Sparsity", "0.8"), ("PruneMethod", "sparsegpt")]),
            ("mlp 80 % sparsegpt + int8 (static QDQ)", mlp, [("Sparsity", "0.8"), ("PruneMethod", "sparsegpt"), ("Quantize", "int8")]),
            ("mlp 80 % sparsegpt + int8-dynamic", mlp, [("Sparsity", "0.8"), ("PruneMethod", "sparsegpt"), ("Quantize", "int8-dynamic")]),
            ("mlp 90 % sparsegpt + int8 (static QDQ)", mlp, [("Sparsity", "0.9"), ("PruneMethod", "sparsegpt"), ("Quantize", "int8")]),
            ("resnet 50 % sparsegpt, fp32", resNet, [("Sparsity", "0.5"), ("PruneMethod", "sparsegpt")]),
            ("resnet 70 % sparsegpt, fp32", resNet, [("Sparsity", "0.7"), ("PruneMethod", "sparsegpt")]),
            ("resnet 70 % sparsegpt + int8 (static QDQ)", resNet, [("Sparsity", "0.7"), ("PruneMethod", "sparsegpt"), ("Quantize", "int8")]),
        })
        {
            var (dense, _) = Compress(path, dataFolder, [.. settings, ("SparseStorage", "false")]);
            var stored = dense.Clone();
            var watch = Stopwatch.StartNew();
            new SparseStoragePass().Apply(new CompressionContext(stored, new CompressionPolicy()));
            var seconds = watch.Elapsed.TotalSeconds;
            var denseBytes = SavedBytes(dense);
            var bytes = SavedBytes(stored);
            var fp32 = new FileInfo(path).Length;
            var identical = Predictions.Run(dense, validation, Cpu, 256).Data.SequenceEqual(Predictions.Run(stored, validation, Cpu, 256).Data);
            output.WriteLine($"| {name} ({denseBytes} B dense, stored in {seconds:0.00} s) | {bytes} | {100.0 * bytes / fp32:0.00} | {identical} |");
        }
    }

    /// <summary>Runs every requested pass, timing each; returns the model and "pass s, …".</summary>
    private static (OnnxModel Model, string Seconds) Compress(string path, string dataFolder, (string, string)[] settings)
    {
        var policy = PolicySettings.Parse(settings.Append(("CalibrationData", "fmnist_calib.npz")).Select(s => KeyValuePair.Create(s.Item1, s.Item2)), dataFolder);
        var model = Load(path);
        var context = new CompressionContext(model, policy);
        var times = new List<string>();
        foreach (var pass in CompressionPipeline.For(policy))
        {
            var watch = Stopwatch.StartNew();
            pass.Apply(context);
            context.Graph.Invalidate();
            if (pass.Stage is PassStage.Structural or PassStage.Prune) times.Add($"{pass.Name} {watch.Elapsed.TotalSeconds:0.00}");
        }
        return (model, string.Join(", ", times));
    }

    private static OnnxModel Load(string path) => OnnxModel.Load(path);

    private static double Accuracy(OnnxModel model, Dataset validation) =>
        Metrics.TopK(Predictions.Run(model, validation, Cpu, 256), validation.Labels!, 1);

    /// <summary>Median batch latency of both models on 64 validation images, side by side in alternating rounds (as the gate times them).</summary>
    private static (double Original, double Pruned) Latency(OnnxModel original, OnnxModel pruned, Dataset validation)
    {
        var batch = validation.BindTo(ModelInput.FromGraph(original.Graph)).Batches(64).First();
        using var a = OnnxRuntimeSession.Create(original.ToBytes(), Cpu);
        using var b = OnnxRuntimeSession.Create(pruned.ToBytes(), Cpu);
        var (first, second) = LatencyComparison.Measure(a, b, batch, rounds: 15);
        return (first.P50Ms, second.P50Ms);
    }

    private static long SavedBytes(OnnxModel model)
    {
        var path = Path.Combine(Path.GetTempPath(), $"pruning-bench-{Guid.NewGuid():N}.onnx");
        try
        {
            model.Save(path);
            return OnnxModel.FileSizeWithExternalData(path);
        }
        finally { File.Delete(path); }
    }
}
