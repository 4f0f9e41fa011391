namespace ModelCompression.Diagnostics;

/// <summary>
/// Every diagnostic the engine reports has a stable code, documented in docs/diagnostics.md.
/// 00xx: usage/internal · 01xx: policy · 011x: model · 012x: data · 013x: runtime · 02xx: gate · 03xx: passes.
/// </summary>
public static class DiagnosticCodes
{
    public const string InternalError = "CM0001";
    public const string BadUsage = "CM0002";
    public const string Cancelled = "CM0003";
    public const string OutputNotWritable = "CM0004";

    public const string UnknownSetting = "CM0101";
    public const string InvalidSettingValue = "CM0102";
    public const string InvalidPolicyFile = "CM0103";
    public const string ConflictingSettings = "CM0104";

    public const string ModelNotFound = "CM0110";
    public const string InvalidModel = "CM0111";
    public const string NonFiniteWeights = "CM0112";
    public const string UnsupportedModel = "CM0113";

    public const string DataNotFound = "CM0120";
    public const string InvalidData = "CM0121";
    public const string DataMismatch = "CM0122";
    public const string MissingLabels = "CM0123";
    public const string MissingCalibrationData = "CM0124";

    public const string ExecutionProviderUnavailable = "CM0130";
    public const string RuntimeFailure = "CM0131";

    public const string AccuracyBelowMinimum = "CM0201";
    public const string AgreementBelowMinimum = "CM0202";
    public const string LatencyRatioExceeded = "CM0203";
    public const string LatencyExceeded = "CM0204";
    public const string SizeRatioExceeded = "CM0205";
    public const string CosineBelowMinimum = "CM0206";
    public const string NonFiniteOutput = "CM0207";
    public const string SnrBelowMinimum = "CM0208";
    public const string AbsErrorExceeded = "CM0209";
    public const string MaskIouBelowMinimum = "CM0210";

    public const string LayerLeftInFloat = "CM0301";
    public const string LayerSkipped = "CM0302";
    public const string NothingToCompress = "CM0303";
    public const string OpsetUpgradeImpossible = "CM0304";
    public const string HighLayerError = "CM0305";
    public const string StaleLockFile = "CM0306";
}
