namespace ModelCompression.Diagnostics;

public enum Severity { Error, Warning, Info }

/// <summary>One coded finding. <see cref="File"/> is what an IDE or CI annotates (the model, data or policy file).</summary>
public sealed record Diagnostic(string Code, Severity Severity, string Message, string? File = null)
{
    /// <summary>The canonical MSBuild form, <c>file: error CM0201: text</c>, which IDEs and CI parse.</summary>
    public string ToCanonicalString()
    {
        var kind = Severity switch { Severity.Error => "error", Severity.Warning => "warning", _ => "info" };
        var origin = string.IsNullOrEmpty(File) ? "compress-model" : File;
        return $"{origin}: {kind} {Code}: {Message}";
    }

    public override string ToString() => ToCanonicalString();
}

/// <summary>An expected failure (bad input, unavailable provider, …): carries its diagnostics; never a stack trace.</summary>
public sealed class CompressionException : Exception
{
    public CompressionException(string code, string message, string? file = null, Exception? inner = null)
        : base(message, inner) => Diagnostics = [new Diagnostic(code, Severity.Error, message, file)];

    public CompressionException(IReadOnlyList<Diagnostic> diagnostics)
        : base(string.Join(Environment.NewLine, diagnostics.Select(d => d.Message))) => Diagnostics = diagnostics;

    public IReadOnlyList<Diagnostic> Diagnostics { get; }
    public string Code => Diagnostics[0].Code;
}
