using ModelCompression.Onnx;
using ModelCompression.Passes;

namespace ModelCompression.Tests.Passes;

/// <summary>
/// A source whose weights are stored as external data compresses to the same model as the same source inline:
/// passes that weigh a compact form against the dense tensor must count the dense tensor's bytes, not the size of
/// its reference to the side file.
/// </summary>
[TestClass]
public sealed class ExternalSourceTests
{
    [TestMethod]
    [DataRow("Codebook", "16", DisplayName = "codebook of 16 values")]
    [DataRow("Quantize", "ternary", DisplayName = "ternary")]
    [DataRow("Sparsity", "0.5", DisplayName = "magnitude 50 %, sparse storage")]
    public void ExternalDataSource_GivesTheSameModelAsInline(string setting, string value)
    {
        var policy = Fixtures.Policy((setting, value));
        var directory = Directory.CreateTempSubdirectory("mc-external-source").FullName;
        var external = Path.Combine(directory, "mlp.onnx");
        using (var model = OnnxModel.Load(Fixtures.Mlp)) model.Save(external, new SaveOptions { ExternalizeThreshold = 1024 });

        var (inlineBytes, inlineRows) = Compress(Fixtures.Mlp, policy);
        var (externalBytes, externalRows) = Compress(external, policy);
        CollectionAssert.AreEqual(inlineRows, externalRows);
        Assert.IsTrue(inlineRows.Any(r => r.Contains(" bytes)")), "a compact form was chosen somewhere: " + string.Join("\n", inlineRows));
        CollectionAssert.AreEqual(inlineBytes, externalBytes);
        Directory.Delete(directory, recursive: true);
    }

    private static (byte[] Bytes, List<string> Rows) Compress(string path, Policy.CompressionPolicy policy)
    {
        using var model = OnnxModel.Load(path);
        var context = new CompressionContext(model, policy);
        CompressionPipeline.Run(context);
        return (model.ToBytes(), context.Records.Select(r => $"{r.Layer}: {r.Technique} ({r.Note})").ToList());
    }
}
