using System.Diagnostics;

namespace ModelCompression.Cli.Tests;

internal sealed record CliResult(ReturnCode Code, string Output, string Error)
{
    public override string ToString() => $"exit {Code}\nstdout:\n{Output}\nstderr:\n{Error}";
}

internal static class CliRunner
{
    public static string Fixture(string file) => Path.Combine(AppContext.BaseDirectory, "data", file);

    /// <summary>Runs the CLI in-process, capturing stdout and stderr.</summary>
    public static CliResult Run(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        var code = CompressModelApp.Run(args, output, error);
        return new CliResult(code, output.ToString(), error.ToString());
    }

    /// <summary>The checkout these tests were built from (the folder holding BuildTasks.sln).</summary>
    public static string RepositoryRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "BuildTasks.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("BuildTasks.sln not found above the test binaries");
    }

    public static string TempDirectory()
    {
        var dir = Path.Combine(Path.GetTempPath(), "mc-cli-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }

    /// <summary>Runs a real process; fails the test on timeout.</summary>
    public static (int ExitCode, string Output) Process(string file, string arguments, string workingDirectory, IDictionary<string, string>? environment = null, int timeoutSeconds = 300)
    {
        var info = new ProcessStartInfo(file, arguments)
        {
            WorkingDirectory = workingDirectory, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        if (environment is not null) foreach (var (k, v) in environment) info.Environment[k] = v;
        using var process = System.Diagnostics.Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeoutSeconds * 1000))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"'{file} {arguments}' did not finish in {timeoutSeconds} s");
        }
        return (process.ExitCode, stdout.Result + stderr.Result);
    }
}
