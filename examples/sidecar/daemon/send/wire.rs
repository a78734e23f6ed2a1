//! One connection's bytes: plain TCP, or a rustls client session driven
//! by hand over the network worker's byte events (rustls never touches
//! the socket: ciphertext in from `Data` events, ciphertext out through
//! `NetClient::send`).

use std::io::{Read, Write};

#[derive(Debug)]
pub enum Wire {
    Plain,
    Tls(Box<rustls::ClientConnection>),
}

impl Wire {
    /// Whether frames may be written (a TLS handshake is done).
    pub fn ready(&self) -> bool {
        match self {
            Wire::Plain => true,
            Wire::Tls(c) => !c.is_handshaking(),
        }
    }

    /// Ciphertext waiting to go out (the handshake, alerts, records).
    pub fn outgoing(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Wire::Tls(c) = self {
            while c.wants_write() {
                // Writing into a Vec cannot fail.
                if c.write_tls(&mut out).is_err() {
                    break;
                }
            }
        }
        out
    }

    /// The bytes to put on the socket for `frame`.
    pub fn seal(&mut self, frame: Vec<u8>) -> Vec<u8> {
        match self {
            Wire::Plain => frame,
            Wire::Tls(c) => {
                // The buffer limit is lifted at connect (the sender bounds
                // what it has in flight), so the whole frame is taken.
                let _ = c.writer().write_all(&frame);
                self.outgoing()
            }
        }
    }

    /// Takes bytes from the socket; appends what they decrypt to (or
    /// are) to `plain`. `Err` names a TLS failure.
    pub fn incoming(&mut self, mut bytes: &[u8], plain: &mut Vec<u8>) -> Result<(), String> {
        let c = match self {
            Wire::Plain => {
                plain.extend_from_slice(bytes);
                return Ok(());
            }
            Wire::Tls(c) => c,
        };
        while !bytes.is_empty() {
            match c.read_tls(&mut bytes) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
            let state = c.process_new_packets().map_err(|e| e.to_string())?;
            let mut want = state.plaintext_bytes_to_read();
            while want > 0 {
                let at = plain.len();
                plain.resize(at + want, 0);
                match c.reader().read(&mut plain[at..]) {
                    Ok(n) => {
                        plain.truncate(at + n);
                        want -= n.min(want);
                        if n == 0 {
                            break;
                        }
                    }
                    Err(_) => {
                        plain.truncate(at);
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}
