"""Socket reads and writes for trio streams with one system call each in the usual case
(``sockio``): shared by the API server, the etcd endpoint, the peer transport and the
client library. Imports no other raftd package."""
