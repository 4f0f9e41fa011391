// Tests run one class at a time per assembly: ONNX Runtime sessions already use both cores.
[assembly: Microsoft.VisualStudio.TestTools.UnitTesting.DoNotParallelize]
