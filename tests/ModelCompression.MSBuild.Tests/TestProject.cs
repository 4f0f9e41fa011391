using System.Text.RegularExpressions;

namespace ModelCompression.MSBuild.Tests;

/// <summary>
/// A throw-away SDK project that references the packed ModelCompression.MSBuild, with fixture models and data copied
/// into it. Builds run as real <c>dotnet</c> processes; each build also writes a detailed log to assert on.
/// </summary>
internal sealed partial class TestProject
{
    private int _builds;

    private TestProject(string directory, string name)
    {
        Directory = directory;
        Name = name;
        System.IO.Directory.CreateDirectory(directory);
    }

    public string Directory { get; }
    public string Name { get; }
    public string ProjectFile => Path.Combine(Directory, Name + ".csproj");
    public string OutputDirectory => Path.Combine(Directory, "bin", "Debug", "net10.0");
    public string IntermediateDirectory => Path.Combine(Directory, "obj", "Debug", "net10.0", "compressmodel");

    /// <summary>A new project in its own folder under the run's temp root.</summary>
    public static TestProject Create(string testName, string name = "App", string? folder = null)
    {
        var directory = Path.Combine(folder ?? Path.Combine(PackageFeed.ProjectsFolder, testName), name);
        var project = new TestProject(directory, name);
        File.WriteAllText(Path.Combine(directory, "Program.cs"), "System.Console.WriteLine(\"ok\");\n");
        return project;
    }

    /// <summary>Writes the project file: a console app with the package reference, <paramref name="items"/> and <paramref name="properties"/>.</summary>
    public TestProject WithProject(string items, string properties = "", string extra = "")
    {
        File.WriteAllText(ProjectFile, $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <Nullable>enable</Nullable>
                {properties}
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="ModelCompression.MSBuild" Version="{PackageFeed.Version}" />
                {items}
              </ItemGroup>
              {extra}
            </Project>
            """);
        return this;
    }

    /// <summary>Copies a fixture from the data/ folder next to the test binaries to a path inside the project.</summary>
    public TestProject WithFixture(string fixture, string relativePath)
    {
        var target = PathOf(relativePath);
        System.IO.Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        File.Copy(Fixture(fixture), target, overwrite: true);
        return this;
    }

    public static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "data", name);

    public string PathOf(string relativePath) => Path.GetFullPath(Path.Combine(Directory, relativePath));

    /// <summary><c>dotnet build</c> (or another verb) at normal console verbosity plus a detailed file log.</summary>
    public BuildResult Run(string verb, params string[] arguments) => RunIn(Directory, ProjectFile, verb, arguments);

    public BuildResult RunIn(string workingDirectory, string target, string verb, params string[] arguments)
    {
        var log = Path.Combine(workingDirectory, $"{verb}-{++_builds}.log");
        var result = DotNet.Run(workingDirectory, null,
            [verb, target, "-tl:off", "-nodeReuse:false", "-v:n", $"-flp:LogFile={log};Verbosity=detailed", .. arguments]);
        return new BuildResult(result, File.Exists(log) ? File.ReadAllText(log) : string.Empty);
    }
}

/// <summary>A build's console output and detailed log, with the questions the tests ask of them.</summary>
internal sealed partial record BuildResult(DotNetResult Process, string DetailedLog)
{
    public int ExitCode => Process.ExitCode;
    public string Output => Process.Output;

    /// <summary>Whether the engine task ran (it only runs when at least one model is stale).</summary>
    public bool RanEngine => DetailedLog.Contains("Task \"CompressModels\"", StringComparison.Ordinal);

    public bool SkippedUpToDate(string target) =>
        DetailedLog.Contains($"Skipping target \"{target}\" because all output files are up-to-date", StringComparison.Ordinal);

    /// <summary>Canonical MSBuild error lines (<c>file : error CODE: text</c>) with this code.</summary>
    public IReadOnlyList<string> ErrorLines(string code) =>
        Output.Split('\n').Where(l => ErrorLine().IsMatch(l) && l.Contains($"error {code}:", StringComparison.Ordinal)).Distinct().ToList();

    public IReadOnlyList<string> WarningLines(string code) =>
        Output.Split('\n').Where(l => l.Contains($"warning {code}:", StringComparison.Ordinal)).Distinct().ToList();

    public override string ToString() => Process.ToString();

    [GeneratedRegex(@"^\s*\S.* : error CM\d{4}: ")]
    private static partial Regex ErrorLine();
}
