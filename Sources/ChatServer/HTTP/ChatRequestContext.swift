import Hummingbird
import NIOCore

/// The request context of the HTTP routes: Hummingbird's basics, the peer address, and
/// the connection, for a route that must end it (a body refused before it is read).
struct ChatRequestContext: RequestContext, RemoteAddressRequestContext {
    var coreContext: CoreRequestContextStorage
    let remoteAddress: SocketAddress?
    let connection: any Channel

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
        connection = source.channel
    }

    /// Ends the connection once the current answer is written: no more of the request
    /// is read (`Connection: close` on the answer says so to the client).
    func closeAfterAnswer() {
        let connection = self.connection
        connection.eventLoop.execute {
            // The decoder takes the end of input mid-request for a malformed request:
            // it is not one, and the answer is already on its way.
            try? connection.pipeline.syncOperations.handler(type: MalformedRequestAnswer.self).expectEndOfInput()
            connection.close(mode: .input, promise: nil)
        }
    }
}
