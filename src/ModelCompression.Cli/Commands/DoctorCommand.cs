using System.CommandLine;
using ModelCompression.Evaluation;
using ModelCompression.Policy;
using ModelCompression.Runtime;

namespace ModelCompression.Cli.Commands;

/// <summary><c>compress-model doctor</c>: what the engine runs on (ORT version and library, providers, CPU flags).</summary>
public static class DoctorCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        // Spelled as the OnnxRuntimeLibrary setting of the other verbs; the old spelling still works but is not shown.
        var library = new Option<string>("--onnx-runtime-library") { Description = "Check this native ONNX Runtime library instead of the bundled one (e.g. the CUDA build).", HelpName = "path" };
        var oldSpelling = new Option<string>("--onnxruntime-library") { Hidden = true };
        var command = new Command("doctor", "Show the ONNX Runtime version, native library, available execution providers and CPU features.") { library, oldSpelling };
        command.SetAction(parse => CompressModelApp.Guard(error, () =>
        {
            if ((parse.GetValue(library) ?? parse.GetValue(oldSpelling)) is { } path)
            {
                if (!File.Exists(path)) throw new Diagnostics.CompressionException(Diagnostics.DiagnosticCodes.InvalidSettingValue, $"OnnxRuntimeLibrary '{path}' does not exist");
                OnnxRuntimeLoader.UseLibrary(Path.GetFullPath(path));
            }
            var environment = RuntimeEnvironment.Capture(new RuntimeOptions(ExecutionProviderSpec.Cpu));
            output.WriteLine($"compress-model {typeof(CompressionEngine).Assembly.GetName().Version?.ToString(3)}");
            output.WriteLine($"ONNX Runtime:       {environment.OnnxRuntimeVersion}");
            output.WriteLine($"native library:     {OnnxRuntimeLoader.NativeLibraryPath() ?? "not found next to the tool"}");
            output.WriteLine($"providers:          {string.Join(", ", OnnxRuntimeLoader.AvailableProviders())}");
            output.WriteLine($"CPU:                {environment.Cpu}");
            output.WriteLine($"instruction sets:   {string.Join(" ", environment.InstructionSets)}");
            output.WriteLine($"logical processors: {environment.ProcessorCount}");
            output.WriteLine($"OS / .NET:          {environment.OperatingSystem} / .NET {environment.DotnetVersion}");
            return ReturnCode.Success;
        }));
        return command;
    }
}
