using ModelCompression.Onnx;
using ModelCompression.Passes;

namespace ModelCompression.Tests.BiasCorrection;

/// <summary>BiasCorrection with Quantize=int8 on the real fixtures: output MSE against the float model on validation data, through ONNX Runtime.</summary>
[TestClass]
public sealed class BiasCorrectionTests
{
    private sealed record Result(OnnxModel Model, CompressionContext Context, double Mse, double Accuracy);

    private static readonly Dictionary<string, (float[] Outputs, double Accuracy)> Originals = [];

    private static (float[] Outputs, double Accuracy) Original(string path)
    {
        lock (Originals)
        {
            if (Originals.TryGetValue(path, out var cached)) return cached;
            var model = OnnxModel.Load(path);
            return Originals[path] = (Fixtures.Outputs(model, int.MaxValue).Data, Fixtures.Accuracy(model));
        }
    }

    private static Result Compress(string path, string mode)
    {
        var model = OnnxModel.Load(path);
        var context = new CompressionContext(model, Fixtures.Policy(("Quantize", "int8"), ("CalibrationData", Fixtures.Calibration), ("BiasCorrection", mode)));
        CompressionPipeline.Run(context);
        var outputs = Fixtures.Outputs(model, int.MaxValue).Data;
        var reference = Original(path).Outputs;
        double sum = 0;
        for (var k = 0; k < outputs.Length; k++) { var d = (double)outputs[k] - reference[k]; sum += d * d; }
        return new Result(model, context, sum / outputs.Length, Fixtures.Accuracy(model));
    }

    [TestMethod]
    [DataRow("mlp")]
    [DataRow("resnet")]
    public void Int8_BiasCorrectionAuto_IsNeverWorseOnValidationMse(string fixture)
    {
        var path = fixture == "mlp" ? Fixtures.Mlp : Fixtures.ResNet;
        var off = Compress(path, "off");
        var auto = Compress(path, "auto");
        var on = Compress(path, "on");
        var original = Original(path).Accuracy;
        var numbers = $"{fixture}: fp32 acc {original:P2}; off MSE {off.Mse:E3} acc {off.Accuracy:P2}; on MSE {on.Mse:E3} acc {on.Accuracy:P2}; auto MSE {auto.Mse:E3} acc {auto.Accuracy:P2}";
        Console.WriteLine(numbers);
        Assert.IsTrue(auto.Mse <= off.Mse, numbers);
        Assert.IsTrue(on.Mse <= off.Mse, numbers);
        // on records the size of each layer's correction; off records none.
        Assert.IsTrue(on.Context.Records.Any(r => r.Note?.Contains("bias corrected (‖Δb‖/‖b‖ = ") == true), numbers);
        Assert.IsFalse(off.Context.Records.Any(r => r.Note?.Contains("bias corrected") == true || r.Note?.Contains("bias added") == true));
        Assert.IsTrue(original - auto.Accuracy <= 0.003, numbers);
    }

    [TestMethod]
    public void ResNet_Int8_BiasCorrection_TwoRunsGiveByteIdenticalModels()
    {
        var first = Compress(Fixtures.ResNet, "auto").Model.ToBytes();
        var second = Compress(Fixtures.ResNet, "auto").Model.ToBytes();
        CollectionAssert.AreEqual(first, second);
    }
}
