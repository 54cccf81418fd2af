import NIOCore

extension RESPToken {
    /// The elements of an array, set or push, read one at a time from the token's bytes.
    ///
    /// Attributes before an element are skipped; `count` does not include them.
    public struct Array: Sequence, Hashable, Sendable {
        /// The number of elements.
        public let count: Int
        /// The bytes after the header: the elements, with any attributes among them.
        let elements: ByteBuffer

        init(count: Int, elements: ByteBuffer) {
            self.count = count
            self.elements = elements
        }

        public var underestimatedCount: Int { self.count }

        public func makeIterator() -> Iterator {
            Iterator(elements: self.elements, remaining: self.count)
        }

        /// Yields the elements in order.
        public struct Iterator: IteratorProtocol {
            var elements: ByteBuffer
            var remaining: Int

            public mutating func next() -> RESPToken? {
                guard self.remaining > 0 else { return nil }
                self.remaining -= 1
                let (start, end) = self.elements.withUnsafeReadableBytes { bytes in
                    let start = RESPSyntax.skipAttributes(bytes, from: 0)
                    return (start, RESPSyntax.skipValues(1, bytes, from: start))
                }
                self.elements.moveReaderIndex(forwardBy: start)
                return RESPToken(validated: self.elements.readSlice(length: end - start)!)
            }
        }
    }

    /// The entries of a map or attribute, read one at a time from the token's bytes.
    ///
    /// Attributes before a key or value are skipped; `count` does not include them.
    public struct Map: Sequence, Hashable, Sendable {
        /// The number of entries (key-value pairs).
        public let count: Int
        /// The bytes after the header: keys and values alternating, with any attributes among them.
        let elements: ByteBuffer

        init(count: Int, elements: ByteBuffer) {
            self.count = count
            self.elements = elements
        }

        public var underestimatedCount: Int { self.count }

        public func makeIterator() -> Iterator {
            Iterator(values: Array.Iterator(elements: self.elements, remaining: self.count * 2))
        }

        /// Yields the entries in order.
        public struct Iterator: IteratorProtocol {
            var values: Array.Iterator

            public mutating func next() -> (key: RESPToken, value: RESPToken)? {
                guard let key = self.values.next(), let value = self.values.next() else { return nil }
                return (key, value)
            }
        }
    }
}
