using ModelCompression.Policy;

namespace ModelCompression.Int4;

public enum Int4Method { Auto, Rtn, Gptq }

/// <summary>Quantize=int4: weight-only 4-bit quantization in blocks along the input axis, each block with its own scale.</summary>
public sealed record Int4Options : IOptions<Int4Options>
{
    public int Int4BlockSize { get; init; } = 32;
    /// <summary>Symmetric blocks (zero point 8, no zero-point tensor) instead of a per-block zero point.</summary>
    public bool Int4Symmetric { get; init; }
    public Int4Method Int4Method { get; init; } = Int4Method.Auto;
    public double Int4Damping { get; init; } = 0.01;

    /// <summary>The method that runs: auto is GPTQ when calibration data is given, else round-to-nearest.</summary>
    public Int4Method MethodFor(bool calibrated) => Int4Method != Int4Method.Auto ? Int4Method : calibrated ? Int4Method.Gptq : Int4Method.Rtn;

    public static OptionsGroup<Int4Options> Group { get; } = new OptionsGroup<Int4Options>("int4", 11,
        "Settings of Quantize=int4 (weight-only, block-wise 4-bit weights).", isTechnique: false)
    {
        NeedsCalibration = o => o.Int4Method == Int4Method.Gptq ? ["Int4Method=gptq"] : [],
    }
        .Add("Int4BlockSize", Syntax.Custom("16|32|64|128|256", ParseBlockSize, v => v.ToString(System.Globalization.CultureInfo.InvariantCulture),
                () => new System.Text.Json.Nodes.JsonObject { ["type"] = "integer", ["enum"] = new System.Text.Json.Nodes.JsonArray(16, 32, 64, 128, 256) }), SettingScope.PerLayer,
            "int4: weights per block along the input axis, each block with its own scale (a power of two, 16–256); smaller is more accurate and larger.",
            o => o.Int4BlockSize, (o, v) => o with { Int4BlockSize = v })
        .Add("Int4Symmetric", Syntax.Bool, SettingScope.PerLayer,
            "int4: symmetric blocks (no zero points, 4 bits less per block) instead of a zero point per block.",
            o => o.Int4Symmetric, (o, v) => o with { Int4Symmetric = v })
        .Add("Int4Method", Syntax.Enum(("auto", Int4Method.Auto), ("rtn", Int4Method.Rtn), ("gptq", Int4Method.Gptq)), SettingScope.PerLayer,
            "int4: auto = gptq when CalibrationData is given, else rtn; rtn = round to nearest; gptq = Hessian-aware rounding that compensates each column's error in the columns not yet quantized (needs CalibrationData).",
            o => o.Int4Method, (o, v) => o with { Int4Method = v },
            explain: (v, p) => v == Int4Method.Auto ? PolicySettings.FormatEnum(new Int4Options().MethodFor(p.Data.CalibrationData is not null)) : null)
        .Add("Int4Damping", Syntax.Number(0, 1, minOpen: true), SettingScope.Model,
            "int4 GPTQ: dampening added to the diagonal of the input second moments, as a fraction of its mean.",
            o => o.Int4Damping, (o, v) => o with { Int4Damping = v });

    private static int ParseBlockSize(string raw)
    {
        if (int.TryParse(raw, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var v) && v is >= 16 and <= 256 && (v & (v - 1)) == 0) return v;
        throw new FormatException("expected a power of two from 16 to 256 (16, 32, 64, 128 or 256)");
    }
}
