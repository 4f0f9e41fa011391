using System.Diagnostics;
using System.Globalization;
using ModelCompression.Data;
using ModelCompression.Evaluation;
using ModelCompression.LowRank;
using ModelCompression.Numerics;
using ModelCompression.Onnx;
using ModelCompression.Passes;
using ModelCompression.Policy;
using ModelCompression.Runtime;

// Low-rank benchmark, run from the repository root:
//   dotnet run -c Release --project bench/LowRank -- mlp,Rank=0.25,LowRankMethod=activation-aware,Exclude=/out/Gemm …
//   dotnet run -c Release --project bench/LowRank -- svd     (randomized vs exact SVD on large matrices)
// Per configuration: pass time, accuracy and agreement on the 2,000 validation images, file size, and the latency
// ratio against the original at batch 64, both models timed in interleaved rounds in the same process.
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
var data = Path.GetFullPath("samples/data");
var runtime = new RuntimeOptions(ExecutionProviderSpec.Cpu);
var validation = Dataset.Load(Path.Combine(data, "fmnist_val.npz"));
const int Rounds = 9, RunsPerRound = 20;

foreach (var arg in args)
{
    if (arg == "svd") { Svd.Run(); continue; }
    var parts = arg.Split(',');
    var file = parts[0] == "mlp" ? "fmnist_mlp.onnx" : "fmnist_resnet.onnx";
    var settings = parts.Skip(1).Select(p => p.Split('=', 2)).Select(kv => KeyValuePair.Create(kv[0], kv[1])).ToList();
    if (settings.Any(s => s.Key == "LowRankMethod" && s.Value == "activation-aware")) settings.Add(KeyValuePair.Create("CalibrationData", "fmnist_calib.npz"));
    var policy = PolicySettings.Parse(settings, data);
    using var original = OnnxModel.Load(Path.Combine(data, file));
    using var model = original.Clone();
    var context = new CompressionContext(model, policy);
    var watch = Stopwatch.StartNew();
    CompressionPipeline.Run(context);
    var passSeconds = watch.Elapsed.TotalSeconds;

    var reference = Predictions.Run(original, validation, runtime, 256);
    var outputs = Predictions.Run(model, validation, runtime, 256);
    var (originalMs, compressedMs, ratio) = Latency(original, model);
    long originalBytes = original.ToBytes().Length, compressedBytes = model.ToBytes().Length;
    Console.WriteLine($"{arg}");
    Console.WriteLine($"  pass {passSeconds:0.00} s | accuracy {Metrics.TopK(outputs, validation.Labels!, 1):P2} (original {Metrics.TopK(reference, validation.Labels!, 1):P2}) | agreement {Metrics.Agreement(reference, outputs):P2}");
    Console.WriteLine($"  size {compressedBytes:N0} / {originalBytes:N0} bytes = {(double)compressedBytes / originalBytes:0.000} | latency p50 batch 64: {compressedMs:0.000} / {originalMs:0.000} ms, median per-round ratio {ratio:0.000}");
    foreach (var r in context.Records)
        Console.WriteLine($"    {r.Layer,-20} {r.Technique,-26} rank {r.Rank?.ToString() ?? "-",4} params {r.ParametersBefore,7:N0} -> {r.ParametersAfter,7:N0} error {r.ReconstructionError?.ToString("0.0000") ?? "-",6}  {r.Note}");
}

(double Original, double Compressed, double Ratio) Latency(OnnxModel original, OnnxModel compressed)
{
    var batch = validation.Take(64).BindTo(ModelInput.FromGraph(original.Graph)).Batches(64).First();
    using var a = OnnxRuntimeSession.Create(original.ToBytes(), runtime);
    using var b = OnnxRuntimeSession.Create(compressed.ToBytes(), runtime);
    a.Time(batch, RunsPerRound);
    b.Time(batch, RunsPerRound);
    var originalRounds = new List<double>();
    var compressedRounds = new List<double>();
    for (var round = 0; round < Rounds; round++)
    {
        // Alternate which model goes first so drift in machine load hits both alike.
        var first = round % 2 == 0;
        var x = Median((first ? a : b).Time(batch, RunsPerRound));
        var y = Median((first ? b : a).Time(batch, RunsPerRound));
        originalRounds.Add(first ? x : y);
        compressedRounds.Add(first ? y : x);
    }
    return (Median(originalRounds), Median(compressedRounds), Median(compressedRounds.Zip(originalRounds, (c, o) => c / o)));
}

static double Median(IEnumerable<double> values)
{
    var sorted = values.Order().ToArray();
    return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
}

/// <summary>Randomized (Halko) against exact (Gram eigen-decomposition) truncated SVD on large matrices shaped like trained weights.</summary>
internal static class Svd
{
    public static void Run()
    {
        foreach (var (rows, cols, rank) in new[] { (1024, 1024, 64), (2048, 2048, 128), (4096, 1024, 64) })
        {
            var m = DecayingSpectrum(rows, cols);
            var watch = Stopwatch.StartNew();
            var fast = TruncatedSvd.Randomized(m, rows, cols, rank, seed: 0);
            var randomizedMs = watch.Elapsed.TotalMilliseconds;
            watch.Restart();
            var exact = TruncatedSvd.Exact(m, rows, cols);
            var exactMs = watch.Elapsed.TotalMilliseconds;
            // Both truncations are projections of M, so their errors are √(discarded energy); 1.000 = optimal.
            var errorRatio = Math.Sqrt(fast.DiscardedFraction(rank) / exact.DiscardedFraction(rank));
            var worst = Enumerable.Range(0, rank).Max(i => Math.Abs(fast.SingularValues[i] - exact.SingularValues[i]) / exact.SingularValues[i]);
            Console.WriteLine($"svd {rows}x{cols} rank {rank}: randomized {randomizedMs:0} ms, exact {exactMs:0} ms ({exactMs / randomizedMs:0.0}x); " +
                              $"rank-{rank} error {errorRatio:0.0000}x the optimum, worst relative error of the top {rank} σ {worst:0.0e+0}");
        }
    }

    /// <summary>Gaussian factors with power-law column scales plus a noise floor: a slowly decaying spectrum.</summary>
    private static double[] DecayingSpectrum(int rows, int cols)
    {
        var random = new Random(1);
        double Normal() => Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());
        const int inner = 512;
        var a = new double[rows * inner];
        var b = new double[inner * cols];
        for (var i = 0; i < a.Length; i++) a[i] = Normal();
        for (var k = 0; k < inner; k++)
            for (var c = 0; c < cols; c++)
                b[k * cols + c] = Normal() / Math.Pow(k + 1, 0.8);
        var m = DenseMath.Multiply(a, b, rows, inner, cols);
        for (var i = 0; i < m.Length; i++) m[i] += 0.05 * Normal();
        return m;
    }
}
