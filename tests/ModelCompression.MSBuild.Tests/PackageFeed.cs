using System.Reflection;

namespace ModelCompression.MSBuild.Tests;

/// <summary>
/// Once per test run: packs src/ModelCompression.MSBuild (task, targets and the engine) from this checkout into a
/// temporary feed, under a version unique to the run, and gives every test project one private NuGet package folder.
/// Nothing a previous run (or the developer's own restores) cached can stand in for the package under test.
/// </summary>
[TestClass]
public static class PackageFeed
{
    private static string? _root;

    /// <summary>Everything this run writes lives under here (removed at the end unless MC_KEEP_TEST_DIRS=1).</summary>
    public static string Root => _root ?? throw new InvalidOperationException("the package feed was not initialized");
    public static string FeedFolder => Path.Combine(Root, "feed");
    public static string NuGetPackagesFolder => Path.Combine(Root, "nuget-packages");
    public static string ProjectsFolder => Path.Combine(Root, "projects");
    public static string Version { get; private set; } = string.Empty;

    public static string RepositoryRoot { get; } =
        typeof(PackageFeed).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "RepositoryRoot").Value!;

    [AssemblyInitialize]
    public static void Pack(TestContext context)
    {
        var runId = DateTime.UtcNow.ToString("yyyyMMddHHmmss", System.Globalization.CultureInfo.InvariantCulture) + "-" + Guid.NewGuid().ToString("N")[..6];
        _root = Path.Combine(Path.GetTempPath(), "modelcompression-msbuild-tests", runId);
        Directory.CreateDirectory(FeedFolder);
        Directory.CreateDirectory(NuGetPackagesFolder);
        Directory.CreateDirectory(ProjectsFolder);
        Version = "0.1.0-test." + runId.Replace("-", ".", StringComparison.Ordinal);

        // Test projects under the temp root must not see any Directory.Build.* or NuGet.config above them.
        File.WriteAllText(Path.Combine(Root, "Directory.Build.props"), "<Project />\n");
        File.WriteAllText(Path.Combine(Root, "Directory.Build.targets"), "<Project />\n");
        // Packages other than the one under test (the sample's ONNX Runtime) come from those the repository restored,
        // read in place as a fallback folder; the package under test only ever comes from the test feed.
        var restored = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } packages
            ? packages : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        File.WriteAllText(Path.Combine(Root, "NuGet.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <packageSources>
                <clear />
                <add key="under-test" value="{FeedFolder}" />
              </packageSources>
              <fallbackPackageFolders>
                <add key="restored" value="{restored}" />
              </fallbackPackageFolders>
            </configuration>
            """);

        var project = Path.Combine(RepositoryRoot, "src", "ModelCompression.MSBuild", "ModelCompression.MSBuild.csproj");
        var pack = DotNet.Run(RepositoryRoot, null, "pack", project, "-c", "Release", "-o", FeedFolder, $"-p:PackageVersion={Version}", "-tl:off", "-nodeReuse:false");
        // NuGet's restore now and then fails without saying why while other test assemblies run dotnet in parallel
        // (MSB4181, NuGet/Home#13460); a second try is what its own CI does. A real failure fails again.
        for (var attempt = 1; attempt < 3 && pack.ExitCode != 0 && pack.Output.Contains("MSB4181", StringComparison.Ordinal); attempt++)
        {
            context.WriteLine($"dotnet pack: restore failed without an error (MSB4181), trying again:\n{pack}");
            pack = DotNet.Run(RepositoryRoot, null, "pack", project, "-c", "Release", "-o", FeedFolder, $"-p:PackageVersion={Version}", "-tl:off", "-nodeReuse:false");
        }
        Assert.AreEqual(0, pack.ExitCode, $"dotnet pack failed:\n{pack}");
        Assert.IsTrue(File.Exists(Path.Combine(FeedFolder, $"ModelCompression.MSBuild.{Version}.nupkg")), pack.ToString());
        context.WriteLine($"packed ModelCompression.MSBuild {Version} in {pack.Elapsed.TotalSeconds:0.0} s");
    }

    [AssemblyCleanup]
    public static void CleanUp()
    {
        if (_root is null || Environment.GetEnvironmentVariable("MC_KEEP_TEST_DIRS") == "1") return;
        try { Directory.Delete(_root, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}
