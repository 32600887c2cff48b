"""`cartd get`, the client command: order a cart, follow it, download, verify, unpack.

It talks to a cart server over HTTP only (cartd, or the original Pacifica Cartd) and
shares with the server nothing but the pure rules of an order (`cartd.schemas`) and of
where a file lands in the tar (`cartd.bundle.member_path`); it imports none of the
server's domain, database or web framework.

    order.py     the order, from a JSON file or from arguments, checked before it is sent
    http.py      the server's answers as typed values (POST, HEAD, GET /<uid>/files, GET)
    watch.py     a thread that follows the cart's progress while the main thread waits
    progress.py  bars on a terminal, plain lines elsewhere
    parts.py     FILE.part and what is kept beside it to resume
    transfer.py  the tar's bytes: those on disk, then the network's, taken up after a cut
    verify.py    every member checked against the order's checksum as it streams in
    extract.py   unpacking a verified tar safely
    get.py       the whole command, start to end
"""
