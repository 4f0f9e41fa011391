using ModelCompression.LowRank;
using ModelCompression.Diagnostics;

namespace ModelCompression.Tests.LowRank;

[TestClass]
public sealed class LowRankPolicyTests
{
    [TestMethod]
    public void RankAndParameterBudgetTogether_AreAConflict()
    {
        var error = Assert.ThrowsExactly<CompressionException>(() => Fixtures.Policy(("Rank", "0.25"), ("ParameterBudget", "0.5")));
        Assert.AreEqual(DiagnosticCodes.ConflictingSettings, error.Code);
        StringAssert.Contains(error.Message, "ParameterBudget");
    }

    [TestMethod]
    public void ActivationAwareWithoutCalibrationData_IsRejected()
    {
        var error = Assert.ThrowsExactly<CompressionException>(() => Fixtures.Policy(("ParameterBudget", "0.5"), ("LowRankMethod", "activation-aware")));
        Assert.AreEqual(DiagnosticCodes.MissingCalibrationData, error.Code);
    }

    [TestMethod]
    public void LowRankDamping_OutOfRange_IsAnInvalidValue()
    {
        var error = Assert.ThrowsExactly<CompressionException>(() => Fixtures.Policy(("Rank", "0.5"), ("LowRankDamping", "0")));
        Assert.AreEqual(DiagnosticCodes.InvalidSettingValue, error.Code);
        Assert.AreEqual(0.5, Fixtures.Policy(("Rank", "0.5"), ("LowRankDamping", "0.5")).Get<LowRankOptions>().LowRankDamping);
    }
}
