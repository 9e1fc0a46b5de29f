//! A checkpoint is one file: a magic tag, the loop's state as JSON, then the weights and
//! the optimizer state (both burnpack). One blob per checkpoint keeps an upload atomic.

use crate::train::TrainState;
use crate::EngineError;

const MAGIC: &[u8; 8] = b"TYCKPT01";

#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub state: TrainState,
    pub model: Vec<u8>,
    pub optimizer: Vec<u8>,
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let state = serde_json::to_vec(&self.state).expect("the state serialises");
        let mut out =
            Vec::with_capacity(8 + 24 + state.len() + self.model.len() + self.optimizer.len());
        out.extend_from_slice(MAGIC);
        for part in [&state, &self.model, &self.optimizer] {
            out.extend_from_slice(&(part.len() as u64).to_le_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, EngineError> {
        let corrupt =
            |why: &str| EngineError::Checkpoint(format!("not a Trainyard checkpoint: {why}"));
        let rest = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| corrupt("bad magic"))?;
        let mut parts = Vec::with_capacity(3);
        let mut rest = rest;
        for _ in 0..3 {
            if rest.len() < 8 {
                return Err(corrupt("truncated"));
            }
            let (len, tail) = rest.split_at(8);
            let len = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
            if tail.len() < len {
                return Err(corrupt("truncated"));
            }
            let (part, tail) = tail.split_at(len);
            parts.push(part.to_vec());
            rest = tail;
        }
        let optimizer = parts.pop().expect("three parts");
        let model = parts.pop().expect("three parts");
        let state = serde_json::from_slice(&parts[0]).map_err(|e| corrupt(&e.to_string()))?;
        Ok(Self {
            state,
            model,
            optimizer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let ck = Checkpoint {
            state: TrainState {
                step: 7,
                ..Default::default()
            },
            model: vec![1, 2, 3],
            optimizer: vec![9; 10],
        };
        let bytes = ck.encode();
        let back = Checkpoint::decode(&bytes).unwrap();
        assert_eq!(back.state.step, 7);
        assert_eq!(back.model, vec![1, 2, 3]);
        assert_eq!(back.optimizer, vec![9; 10]);
        assert!(Checkpoint::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(Checkpoint::decode(b"nope").is_err());
    }
}
