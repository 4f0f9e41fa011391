namespace ModelCompression.MSBuild;

/// <summary>
/// The codes of the diagnostics the MSBuild layer reports itself (CM0500–CM0599). Everything about models, settings
/// and the gate comes from the engine with its own codes. Documented in docs/diagnostics.md ("MSBuild task").
/// </summary>
internal static class Diagnostics
{
    /// <summary>The engine (compress-model.dll) is not where <c>CompressModelEnginePath</c> points.</summary>
    public const string EngineNotFound = "CM0501";
    /// <summary>No <c>dotnet</c> host to run the engine with.</summary>
    public const string DotNetHostNotFound = "CM0502";
    /// <summary>A <c>CompressModel</c> item names a file that does not exist.</summary>
    public const string ModelNotFound = "CM0503";
    /// <summary>An item reached the task without the output path the targets compute (the task was called directly).</summary>
    public const string MissingOutputPath = "CM0504";
    /// <summary>Two items would write the same output file.</summary>
    public const string DuplicateOutput = "CM0505";
    /// <summary>The output would overwrite the source model.</summary>
    public const string OutputOverwritesSource = "CM0506";
    /// <summary><c>Link</c>/<c>OutputPath</c> is absolute or leaves the output folder.</summary>
    public const string InvalidOutputPath = "CM0507";
    /// <summary>The request or stamp file could not be written.</summary>
    public const string CannotWriteFile = "CM0510";
    /// <summary>The engine exited with a failure code without reporting an error of its own.</summary>
    public const string EngineFailed = "CM0520";
    /// <summary>The engine reported success but an output file is missing.</summary>
    public const string OutputMissing = "CM0521";
}
