/// Why a tool will not do what it was asked (a path, a program, a URL, an edit): the message is
/// what the model reads in the error result.
struct ToolRefusal: Error {
    var message: String
}
