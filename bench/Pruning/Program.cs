using System.Diagnostics;
using ModelCompression.Data;
using ModelCompression.Evaluation;
using ModelCompression.Onnx;
using ModelCompression.Passes;
using ModelCompression.Policy;
using ModelCompression.Runtime;

var data = Path.GetFullPath("tests/data");
var rt = new RuntimeOptions(ExecutionProviderSpec.Cpu);
var val = Dataset.Load(Path.Combine(data, "fmnist_val.npz"));
double Acc(OnnxModel m) => Metrics.TopK(Predictions.Run(m, val, rt, 256), val.Labels!, 1);

(OnnxModel, CompressionContext, double) Compress(string file, params (string, string)[] settings)
{
    var policy = PolicySettings.Parse(settings.Select(s => KeyValuePair.Create(s.Item1, s.Item2)).Append(KeyValuePair.Create("CalibrationData", "fmnist_calib.npz")), data);
    var model = OnnxModel.Load(Path.Combine(data, file));
    var ctx = new CompressionContext(model, policy);
    var sw = Stopwatch.StartNew();
    CompressionPipeline.Run(ctx);
    return (model, ctx, sw.Elapsed.TotalSeconds);
}

foreach (var arg in args)
{
    var parts = arg.Split(',');
    var file = parts[0] == "mlp" ? "fmnist_mlp.onnx" : "fmnist_resnet.onnx";
    var settings = parts.Skip(1).Select(p => p.Split('=')).Select(kv => (kv[0], kv[1])).ToArray();
    if (settings.Length == 0) { using var m0 = OnnxModel.Load(Path.Combine(data, file)); Console.WriteLine($"{arg}: fp32 acc {Acc(m0):P2}"); continue; }
    var (model, ctx, seconds) = Compress(file, settings);
    Console.WriteLine($"{arg}: acc {Acc(model):P2}  pass {seconds:0.00}s");
    foreach (var r in ctx.Records) Console.WriteLine($"   {r.Layer,-22} {r.Technique,-10} {r.ParametersBefore,8} -> {r.ParametersAfter,8} sp {r.Sparsity:0.0000} err {r.ReconstructionError:0.0000} {r.Note}");
    model.Dispose();
}
