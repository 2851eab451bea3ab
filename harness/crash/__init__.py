"""The storage crash test: a writer process killed at random, its acks checked after restart."""
