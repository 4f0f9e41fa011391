using ModelCompression.Onnx;
using ModelCompression.Passes;
using DataLocation = ModelCompression.Onnx.Protobuf.TensorProto.Types.DataLocation;

namespace ModelCompression.Tests.Passes;

/// <summary>
/// On a large model the staged passes spill the weights they have written to a private file after each stage, and
/// the later stages, the next passes and the save read them from there. The model is the same bytes as when they
/// stay in memory.
/// </summary>
[TestClass]
public sealed class SpillTests
{
    [TestMethod]
    [DataRow("Sparsity=0.5", DisplayName = "SparseGPT 50 %, sparse storage")]
    [DataRow("Quantize=int4", DisplayName = "int4 GPTQ")]
    [DataRow("Sparsity=0.5;PruneMethod=magnitude", DisplayName = "magnitude 50 %, spilled after every layer")]
    public void LargeModel_WithWrittenWeightsSpilled_GivesTheSameModel(string settings)
    {
        var technique = settings.Split(';').Select(s => s.Split('=')).Select(p => (p[0], p[1]));
        var policy = Fixtures.Policy([.. technique, ("CalibrationData", "fmnist_calib.npz"), ("CalibrationSamples", "32")]);
        var (kept, _) = Compress(policy, spill: false);
        var (spilledBytes, spilled) = Compress(policy, spill: true);
        Assert.IsPositive(spilled, "some built weights were spilled");
        CollectionAssert.AreEqual(kept, spilledBytes);
    }

    private static (byte[] Bytes, int Spilled) Compress(Policy.CompressionPolicy policy, bool spill)
    {
        var directory = Directory.CreateTempSubdirectory("mc-spill").FullName;
        byte[] bytes;
        int spilled;
        using (var model = OnnxModel.Load(Fixtures.Mlp))
        {
            var context = new CompressionContext(model, policy) { LargeModel = true, SpillPathPrefix = spill ? Path.Combine(directory, "out") : null, SpillMinBytes = 1024, ReleaseEveryBytes = 1 };
            CompressionPipeline.Run(context);
            spilled = model.Graph.Initializer.Count(t => t.DataLocation == DataLocation.External);
            bytes = model.ToBytes();
        }
        Assert.IsEmpty(Directory.GetFileSystemEntries(directory), "nothing left in the folder");
        Directory.Delete(directory);
        return (bytes, spilled);
    }
}
