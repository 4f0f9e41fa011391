using System.Diagnostics;
using System.Globalization;
using ModelCompression.Data;
using ModelCompression.Evaluation;
using ModelCompression.Onnx;
using ModelCompression.Passes;
using ModelCompression.Policy;
using ModelCompression.Runtime;

// Usage: dotnet run -c Release --project bench/Codebook [-- --data <folder> --rounds 9 --runs 20 --models mlp,resnet]
// One table per fixture, every weight format measured in the same run against the same fp32 model: pass time,
// file and Brotli size as a fraction of the fp32 file, top-1 accuracy on the validation set, and p50 latency
// relative to fp32 (interleaved rounds at batch 64). On the MLP, int4 (MatMulNBits) is also timed at batch 1 and
// against int8. All cases use the fixture's calibration data (int8 static, int4 GPTQ).
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
string? Value(string name) => Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;
var data = Path.GetFullPath(Value("--data") ?? Path.Combine(AppContext.BaseDirectory, "data"));
var rounds = int.Parse(Value("--rounds") ?? "9", CultureInfo.InvariantCulture);
var runs = int.Parse(Value("--runs") ?? "20", CultureInfo.InvariantCulture);
var models = (Value("--models") ?? "mlp,resnet").Split(',');
var cpu = new RuntimeOptions(ExecutionProviderSpec.Cpu);
var validation = Dataset.Load(Path.Combine(data, "fmnist_val.npz"));
Console.WriteLine($"ONNX Runtime {OnnxRuntimeLoader.Version()}, {Environment.ProcessorCount} logical CPUs; latency: p50 of {rounds} interleaved rounds x {runs} runs; Brotli as the report measures it");

(string Name, (string, string)[] Settings)[] cases =
[
    ("int8", [("Quantize", "int8")]),
    ("int4", [("Quantize", "int4")]),
    ("codebook 16 scalar", [("Codebook", "16")]),
    ("codebook 16 product", [("Codebook", "16"), ("CodebookMethod", "product")]),
    ("codebook 256 product", [("Codebook", "256"), ("CodebookMethod", "product")]),
    ("codebook 16 residual", [("Codebook", "16"), ("CodebookMethod", "residual")]),
    ("ternary", [("Quantize", "ternary")]),
    ("float16", [("Quantize", "float16")]),
];

foreach (var fixture in models.Select(m => $"fmnist_{m}.onnx"))
{
    using var original = OnnxModel.Load(Path.Combine(data, fixture));
    var fp32Bytes = original.ToBytes();
    var bound = validation.BindTo(ModelInput.FromGraph(original.Graph));
    var batch64 = bound.Batches(64).First();
    var accuracyFp32 = Accuracy(original);
    Console.WriteLine();
    Console.WriteLine($"{fixture}: fp32 {fp32Bytes.Length:N0} B, Brotli {DeployedSize.Brotli(fp32Bytes):N0} B ({Percent(DeployedSize.Brotli(fp32Bytes))}), top-1 {accuracyFp32 * 100:0.00} % ({validation.Count} images)");
    Console.WriteLine($"| {"case",-22} | {"pass",8} | {"file",7} | {"Brotli",7} | {"top-1",8} | {"drop",8} | {"latency",7} |");
    Console.WriteLine($"|{new string('-', 24)}|{new string('-', 10)}|{new string('-', 9)}|{new string('-', 9)}|{new string('-', 10)}|{new string('-', 10)}|{new string('-', 9)}|");
    var produced = new Dictionary<string, byte[]>();
    foreach (var (name, settings) in cases)
    {
        var policy = PolicySettings.Parse([.. settings.Select(s => new KeyValuePair<string, string>(s.Item1, s.Item2)), new("CalibrationData", "fmnist_calib.npz")], data);
        var compressed = original.Clone();
        var start = Stopwatch.GetTimestamp();
        CompressionPipeline.Run(new CompressionContext(compressed, policy));
        var passMs = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        var bytes = compressed.ToBytes();
        produced[name] = bytes;
        var accuracy = Accuracy(compressed);
        var ratio = LatencyRatio(fp32Bytes, bytes, batch64);
        Console.WriteLine($"| {name,-22} | {passMs,5:0} ms | {Percent(bytes.Length),7} | {Percent(DeployedSize.Brotli(bytes)),7} | {accuracy * 100,6:0.00} % | {(accuracyFp32 - accuracy) * 100,5:0.00} pt | {ratio,6:0.00}x |");
    }
    Console.WriteLine("(file and Brotli: % of the fp32 file; latency: p50 relative to fp32 at batch 64)");
    if (fixture.Contains("mlp", StringComparison.Ordinal))
    {
        // MatMulNBits is what int4 is for: time it where it runs, at batch 1 and 64, against fp32 and int8.
        var batch1 = bound.Batches(1).First();
        foreach (var (label, batch) in new[] { ("batch 1", batch1), ("batch 64", batch64) })
            Console.WriteLine($"int4 (MatMulNBits) {label}: latency {LatencyRatio(fp32Bytes, produced["int4"], batch):0.00}x fp32, {LatencyRatio(produced["int8"], produced["int4"], batch):0.00}x int8");
    }

    string Percent(long size) => $"{100.0 * size / fp32Bytes.Length:0.00} %";
}

double Accuracy(OnnxModel model) => Metrics.TopK(Predictions.Run(model, validation, cpu, 256), validation.Labels!, 1);

// p50 of b over p50 of a, both timed in alternating rounds (a b, b a, …) so drift on a busy machine hits both alike.
double LatencyRatio(byte[] a, byte[] b, IReadOnlyList<NdArray> batch)
{
    using var sessionA = OnnxRuntimeSession.Create(a, cpu);
    using var sessionB = OnnxRuntimeSession.Create(b, cpu);
    sessionA.Time(batch, 5);
    sessionB.Time(batch, 5);
    var timesA = new List<double>();
    var timesB = new List<double>();
    for (var r = 0; r < rounds; r++)
    {
        if (r % 2 == 0) { timesA.AddRange(sessionA.Time(batch, runs)); timesB.AddRange(sessionB.Time(batch, runs)); }
        else { timesB.AddRange(sessionB.Time(batch, runs)); timesA.AddRange(sessionA.Time(batch, runs)); }
    }
    return Median(timesB) / Median(timesA);
}

static double Median(List<double> values)
{
    var sorted = values.Order().ToArray();
    return sorted[sorted.Length / 2];
}
