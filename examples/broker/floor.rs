//! `broker floor`: the bench's reference for one record in flight, a
//! minimal blocking server that speaks the producer side of the protocol,
//! acks every record the moment it is decoded (offsets as the log would
//! give them) and stores nothing. Issue 16 measured such a server at 31.9k
//! records/s at 1 x 1 on this machine; the broker must reach it while
//! storing every record.

use crate::log::RECORD_HEADER;
use crate::protocol::{self, FrameDecoder, Role};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

/// Serves until the process ends: one thread per connection.
///
/// # Errors
/// The address cannot be bound.
pub fn serve(addr: &str, max_record: u32) -> io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    println!("broker floor: listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        thread::spawn(move || {
            let _ = connection(stream, max_record);
        });
    }
    Ok(())
}

fn connection(mut s: TcpStream, max_record: u32) -> io::Result<()> {
    s.set_nodelay(true)?;
    let mut role = [0u8];
    s.read_exact(&mut role)?;
    if !matches!(Role::from_byte(role[0]), Ok((Role::Producer, false))) {
        // Only producers on the default log: it is a producer's reference.
        return Ok(());
    }
    let mut decoder = FrameDecoder::new(max_record);
    let mut buf = vec![0u8; 64 << 10];
    let mut acks = Vec::new();
    let mut next = 0u64;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        decoder.feed(&buf[..n]);
        acks.clear();
        while let Ok(Some(record)) = decoder.next_frame() {
            acks.extend_from_slice(&protocol::encode_ack(next));
            next += RECORD_HEADER + record.len() as u64;
        }
        s.write_all(&acks)?;
    }
}
