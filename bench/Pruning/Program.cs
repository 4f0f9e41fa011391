using System.Diagnostics;
using ModelCompression.Data;
using ModelCompression.Evaluation;
using ModelCompression.Onnx;
using ModelCompression.Passes;
using ModelCompression.Onnx.Protobuf;
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
    var latency = parts.Contains("lat");
    var settings = parts.Skip(1).Where(p => p is not ("lat" or "store" or "int8" or "dumpmask")).Select(p => p.Split('=')).Select(kv => (kv[0], kv[1])).ToArray();
    if (settings.Length == 0) { using var m0 = OnnxModel.Load(Path.Combine(data, file)); Console.WriteLine($"{arg}: fp32 acc {Acc(m0):P2}"); continue; }
    var (model, ctx, seconds) = Compress(file, settings);
    Console.WriteLine($"{arg}: acc {Acc(model):P2}  pass {seconds:0.00}s");
    if (parts.Contains("int8")) QuantizeWeights(model);
    if (parts.Contains("dumpmask"))
        foreach (var t in model.Graph.Initializer.Where(t => t.Dims.Count == 2 && t.Dims[0] * t.Dims[1] > 10000))
            File.WriteAllText($"/tmp/prune_exp/mask_{t.Name}.txt", $"{t.Dims[0]} {t.Dims[1]}\n" + string.Concat(model.ReadFloats(t).Select(x => x == 0 ? '0' : '1')));
    if (parts.Contains("store"))
    {
        var dense = model.Clone();
        var sctx = new CompressionContext(model, ctx.Policy);
        new ModelCompression.Pruning.SparseStoragePass().Apply(sctx);
        var o1 = Predictions.Run(dense, val, rt, 256);
        var o2 = Predictions.Run(model, val, rt, 256);
        var original = new FileInfo(Path.Combine(data, file)).Length;
        Console.WriteLine($"   storage: dense {dense.ToBytes().Length} B, sparse {model.ToBytes().Length} B = {100.0 * model.ToBytes().Length / original:0.00}% of fp32 file {original} B; identical outputs {o1.Data.SequenceEqual(o2.Data)}");
        {
            using var so = new Microsoft.ML.OnnxRuntime.SessionOptions { GraphOptimizationLevel = Microsoft.ML.OnnxRuntime.GraphOptimizationLevel.ORT_ENABLE_ALL, OptimizedModelFilePath = "/tmp/prune_exp/opt.onnx" };
            using (new Microsoft.ML.OnnxRuntime.InferenceSession(model.ToBytes(), so)) { }
            using var opt = OnnxModel.Load("/tmp/prune_exp/opt.onnx");
            Console.WriteLine("   optimized: " + string.Join(" ", opt.Graph.Node.Select(x => x.OpType)));
            var diffs = o1.Data.Zip(o2.Data).Select(p => Math.Abs(p.First - p.Second)).Max();
            Console.WriteLine($"   max |diff| {diffs}");
        }
        foreach (var r in sctx.Records)
        {
            Console.WriteLine($"      {r.Layer} {r.Note}");
            if (dense.Graph.Initializer.First(t => t.Name == r.Layer).DataType != 1) continue;
            var expected = dense.ReadFloats(dense.Graph.Initializer.First(t => t.Name == r.Layer));
            ModelCompression.Calibration.ActivationCapture.Run(model, [r.Layer], val.Take(1), rt, 1, b =>
            {
                var got = b[r.Layer].Data;
                var diff = Enumerable.Range(0, expected.Length).Count(i => BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(got[i]));
                Console.WriteLine($"         decoded {got.Length} vs {expected.Length}, differing {diff}");
            });
        }
    }
    if (latency)
    {
        using var original = OnnxModel.Load(Path.Combine(data, file));
        var batch = val.BindTo(ModelInput.FromGraph(original.Graph)).Batches(64).First();
        using var a = OnnxRuntimeSession.Create(original.ToBytes(), rt);
        using var b = OnnxRuntimeSession.Create(model.ToBytes(), rt);
        a.Time(batch, 20); b.Time(batch, 20);
        var ta = new List<double>(); var tb = new List<double>();
        for (var round = 0; round < 15; round++) { ta.AddRange(a.Time(batch, 10)); tb.AddRange(b.Time(batch, 10)); }
        double Median(List<double> x) { var s = x.OrderBy(v => v).ToList(); return s[s.Count / 2]; }
        Console.WriteLine($"   latency fp32 {Median(ta):0.000} ms, compressed {Median(tb):0.000} ms, ratio {Median(tb) / Median(ta):0.000}");
    }
    foreach (var r in ctx.Records) Console.WriteLine($"   {r.Layer,-22} {r.Technique,-10} {r.ParametersBefore,8} -> {r.ParametersAfter,8} sp {r.Sparsity:0.0000} err {r.ReconstructionError:0.0000} {r.Note}");
    model.Dispose();
}

// Per-output-channel symmetric int8 weights with DequantizeLinear (a stand-in for the quantization pass).
static void QuantizeWeights(OnnxModel model)
{
    var graph = new OnnxGraph(model.Graph);
    foreach (var layer in WeightedLayer.Find(graph).ToList())
    {
        if (!layer.StoredOutIn) continue;
        var w = model.ReadFloats(layer.Weight);
        var rows = layer.OutFeatures; var cols = layer.InFeatures;
        var q = new sbyte[w.Length]; var scales = new float[rows];
        for (var r = 0; r < rows; r++)
        {
            var max = 0f; for (var c = 0; c < cols; c++) max = Math.Max(max, Math.Abs(w[r * cols + c]));
            scales[r] = max > 0 ? max / 127 : 1;
            for (var c = 0; c < cols; c++) q[r * cols + c] = (sbyte)Math.Clamp(Math.Round(w[r * cols + c] / scales[r]), -127, 127);
        }
        var name = layer.Weight.Name;
        graph.RemoveInitializer(name);
        graph.SetInitializer(Tensors.FromInt8s(name + "_q", layer.WeightShape, q));
        graph.SetInitializer(Tensors.FromFloats(name + "_scale", [rows], scales));
        var dq = new ModelCompression.Onnx.Protobuf.NodeProto { OpType = "DequantizeLinear", Name = name + "_dq" };
        dq.Input.Add(name + "_q"); dq.Input.Add(name + "_scale"); dq.Output.Add(name);
        dq.Attribute.Add(new ModelCompression.Onnx.Protobuf.AttributeProto { Name = "axis", I = 0, Type = ModelCompression.Onnx.Protobuf.AttributeProto.Types.AttributeType.Int });
        graph.Proto.Node.Insert(0, dq);
        graph.Invalidate();
    }
}
