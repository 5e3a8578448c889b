import SQLiteNIO

/// Raw access to a store's file, for tests that damage it on purpose.
enum SQLiteConnectionForTests {
    static func open(_ path: String) async throws -> SQLiteConnection {
        try await SQLiteConnection.open(storage: .file(path: path))
    }
}
