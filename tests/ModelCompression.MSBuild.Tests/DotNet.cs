using System.Diagnostics;
using System.Text;

namespace ModelCompression.MSBuild.Tests;

/// <summary>The result of one <c>dotnet</c> process: exit code and stdout+stderr, interleaved as printed.</summary>
internal sealed record DotNetResult(int ExitCode, string Output, TimeSpan Elapsed)
{
    public override string ToString() => $"exit code {ExitCode} after {Elapsed.TotalSeconds:0.0} s\n{Output}";
}

/// <summary>
/// Runs the dotnet CLI as a user would, but isolated: a private NuGet package folder (so a package version cached by
/// an earlier run is never used), no MSBuild node reuse (no node outlives a test), no inherited MSBuild state from
/// the test host, and the classic console logger (stable text to assert on).
/// </summary>
internal static class DotNet
{
    public static string Host { get; } = FindHost();

    public static DotNetResult Run(string workingDirectory, IReadOnlyDictionary<string, string>? environment, params string[] arguments) =>
        Start(workingDirectory, environment, arguments).WaitForResult();

    public static RunningDotNet Start(string workingDirectory, IReadOnlyDictionary<string, string>? environment, params string[] arguments) =>
        Start(workingDirectory, environment, interruptible: false, arguments);

    /// <param name="interruptible">Run through <c>env --default-signal=INT</c> (same process id after its exec): a test
    /// run started in the background of a non-interactive shell inherits SIGINT ignored, and a child that ignores it
    /// would never see the Ctrl+C a cancellation test sends.</param>
    public static RunningDotNet Start(string workingDirectory, IReadOnlyDictionary<string, string>? environment, bool interruptible, params string[] arguments)
    {
        var info = new ProcessStartInfo(interruptible ? "env" : Host)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (interruptible) { info.ArgumentList.Add("--default-signal=INT"); info.ArgumentList.Add(Host); }
        foreach (var argument in arguments) info.ArgumentList.Add(argument);

        foreach (var name in info.Environment.Keys.ToList())
            if (name.StartsWith("MSBUILD", StringComparison.OrdinalIgnoreCase) || name.StartsWith("VSTEST", StringComparison.OrdinalIgnoreCase)
                || name.StartsWith("TESTINGPLATFORM", StringComparison.OrdinalIgnoreCase) || name is "DOTNET_HOST_PATH")
                info.Environment.Remove(name);
        info.Environment["MSBUILDDISABLENODEREUSE"] = "1";
        info.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        info.Environment["DOTNET_NOLOGO"] = "1";
        info.Environment["DOTNET_SKIP_FIRST_TIME_EXPERIENCE"] = "1";
        info.Environment["DOTNET_CLI_UI_LANGUAGE"] = "en";
        info.Environment["NUGET_PACKAGES"] = PackageFeed.NuGetPackagesFolder;
        foreach (var (name, value) in environment ?? new Dictionary<string, string>()) info.Environment[name] = value;

        return new RunningDotNet(Process.Start(info)!);
    }

    private static string FindHost()
    {
        var fromMSBuild = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH");
        if (!string.IsNullOrEmpty(fromMSBuild) && File.Exists(fromMSBuild)) return fromMSBuild;
        var root = Environment.GetEnvironmentVariable("DOTNET_ROOT");
        var name = OperatingSystem.IsWindows() ? "dotnet.exe" : "dotnet";
        if (!string.IsNullOrEmpty(root) && File.Exists(Path.Combine(root, name))) return Path.Combine(root, name);
        return name;
    }
}

/// <summary>A started <c>dotnet</c> process whose output is collected as it comes.</summary>
internal sealed class RunningDotNet
{
    private static readonly TimeSpan Timeout = TimeSpan.FromMinutes(5);
    private readonly StringBuilder _output = new();
    private readonly Stopwatch _clock = Stopwatch.StartNew();

    public RunningDotNet(Process process)
    {
        Process = process;
        process.OutputDataReceived += (_, e) => Append(e.Data);
        process.ErrorDataReceived += (_, e) => Append(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    public Process Process { get; }

    public string OutputSoFar { get { lock (_output) return _output.ToString(); } }

    public DotNetResult WaitForResult()
    {
        if (!Process.WaitForExit(Timeout))
        {
            Process.Kill(entireProcessTree: true);
            Process.WaitForExit();
            Assert.Fail($"dotnet {string.Join(' ', Process.StartInfo.ArgumentList)} did not finish in {Timeout}:\n{OutputSoFar}");
        }
        Process.WaitForExit();  // drains the redirected streams
        return new DotNetResult(Process.ExitCode, OutputSoFar, _clock.Elapsed);
    }

    private void Append(string? line)
    {
        if (line is null) return;
        lock (_output) _output.AppendLine(line);
    }
}
