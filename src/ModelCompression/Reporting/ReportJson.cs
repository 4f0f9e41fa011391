using System.Text.Json;
using System.Text.Json.Serialization;

namespace ModelCompression.Reporting;

/// <summary>report.json: camelCase, indented, enums as strings, NaN written as null.</summary>
public static class ReportJson
{
    public static readonly JsonSerializerOptions Options = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.KebabCaseLower) },
    };

    public static string Serialize(CompressionReport report) => JsonSerializer.Serialize(report, Options);
}
