import Foundation
import Synchronization
import Testing
import TroupeCore

/// The queue between an MCP server's stdout and the client (issue 20, item 7): bounded, with
/// back-pressure instead of unbounded growth.
@Suite struct BoundedMessageQueueTests {
    private func message(_ byte: UInt8, _ count: Int = 40) -> Data { Data(repeating: byte, count: count) }

    @Test func aProducerAheadOfItsConsumerWaitsForRoom() async {
        let queue = BoundedMessageQueue(limit: 100)
        #expect(await queue.send(message(1)))
        #expect(await queue.send(message(2)))
        #expect(queue.heldBytes == 80)
        let sent = Mutex(false)
        let third = Task {
            let accepted = await queue.send(message(3))
            sent.withLock { $0 = true }
            return accepted
        }
        for _ in 0..<50 { await Task.yield() }
        #expect(!sent.withLock { $0 }, "a third message of 40 bytes does not fit in 100 with 80 held")
        #expect(queue.heldBytes == 80)
        #expect(await queue.next() == message(1))
        #expect(await third.value)
        #expect(await queue.next() == message(2))
        #expect(await queue.next() == message(3))
        #expect(queue.heldBytes == 0)
    }

    @Test func aMessageLargerThanTheLimitPassesAnEmptyQueue() async {
        let queue = BoundedMessageQueue(limit: 10)
        #expect(await queue.send(message(7, 1_000)))
        #expect(await queue.next()?.count == 1_000)
    }

    @Test func aWaitingConsumerGetsTheNextMessage() async {
        let queue = BoundedMessageQueue(limit: 100)
        let received = Task { await queue.next() }
        for _ in 0..<10 { await Task.yield() }
        #expect(await queue.send(message(9)))
        #expect(await received.value == message(9))
    }

    @Test func finishingDeliversWhatIsHeldThenEndsAndLetsAWaitingProducerGo() async {
        let queue = BoundedMessageQueue(limit: 50)
        #expect(await queue.send(message(1)))
        let blocked = Task { await queue.send(message(2)) }
        for _ in 0..<20 { await Task.yield() }
        queue.finish()
        let accepted = await blocked.value
        #expect(await queue.next() == message(1))
        if accepted { #expect(await queue.next() == message(2)) }
        #expect(await queue.next() == nil)
        #expect(await !queue.send(message(3)), "a finished queue takes nothing")
    }

    @Test func aCancelledConsumerStopsWaiting() async {
        let queue = BoundedMessageQueue(limit: 100)
        let waiting = Task { await queue.next() }
        waiting.cancel()
        #expect(await waiting.value == nil)
    }

    @Test func aCancelledProducerStopsWaiting() async {
        let queue = BoundedMessageQueue(limit: 50)
        #expect(await queue.send(message(1)))
        let waiting = Task { await queue.send(message(2)) }
        waiting.cancel()
        #expect(await waiting.value == false)
    }

    @Test func orderIsKeptAcrossManyMessages() async {
        let queue = BoundedMessageQueue(limit: 64)
        let producer = Task {
            for index in 0..<2_000 { await queue.send(Data("\(index)".utf8)) }
            queue.finish()
        }
        var received: [String] = []
        while let next = await queue.next() { received.append(String(decoding: next, as: UTF8.self)) }
        await producer.value
        #expect(received == (0..<2_000).map(String.init))
    }
}
