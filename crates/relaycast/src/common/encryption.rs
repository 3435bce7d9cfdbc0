//! The origin's AES-128 cipher (F7): AES-128-CBC with PKCS#7 padding, keys derived from the
//! cluster's playback key (see [`PlaybackKey::content_key`]), IV = the segment's sequence number
//! (see `relaycast_core::encryption`).

use std::sync::Arc;

use aes::cipher::{BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use relaycast_core::Name;
use relaycast_core::encryption::{SegmentCipher, iv};

use crate::common::playback::PlaybackKey;

#[derive(Debug)]
pub struct Aes128Cbc {
    pub key: Arc<PlaybackKey>,
}

impl SegmentCipher for Aes128Cbc {
    fn encrypt(&self, channel: &Name, key_index: u64, seq: u64, data: &[u8]) -> Vec<u8> {
        let key = self.key.content_key(channel, key_index);
        cbc::Encryptor::<aes::Aes128>::new(&key.into(), &iv(seq).into()).encrypt_padded_vec_mut::<Pkcs7>(data)
    }
}

#[cfg(test)]
mod tests {
    use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};

    use super::*;

    #[test]
    fn a_segment_decrypts_with_its_channel_key_and_sequence_iv_only() {
        let dir = std::env::temp_dir().join(format!("relaycast-aes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = Arc::new(PlaybackKey::load_or_create(&dir.join("k")).unwrap());
        let cam = Name::new("cam").unwrap();
        let clear: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let sealed = Aes128Cbc { key: key.clone() }.encrypt(&cam, 2, 7, &clear);
        assert_eq!(sealed.len(), 1008, "PKCS#7 pads to the next block");
        assert_ne!(&sealed[..16], &clear[..16]);
        let open = |index: u64, seq: u64| {
            cbc::Decryptor::<aes::Aes128>::new(&key.content_key(&cam, index).into(), &iv(seq).into())
                .decrypt_padded_vec_mut::<Pkcs7>(&sealed)
        };
        assert_eq!(open(2, 7).unwrap(), clear);
        assert_ne!(open(3, 7).ok(), Some(clear.clone()), "another key does not open it");
        assert_ne!(open(2, 8).ok(), Some(clear), "another IV does not either");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
