using ModelCompression.Cli;

using var cancellation = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    // First Ctrl+C cancels cleanly (no partial output); a second one kills the process.
    e.Cancel = !cancellation.IsCancellationRequested;
    cancellation.Cancel();
};
return (int)CompressModelApp.Run(args, Console.Out, Console.Error, cancellation.Token);
