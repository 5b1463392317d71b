//! The sink of a stream: batches go to the consumer through a bounded
//! channel, so a slow consumer holds the decoders back and memory stays
//! bounded whatever the table size.

use crossbeam_channel::Sender;

use super::{BatchSink, SinkEnd};
use crate::carry::{BatchOrigin, PageMap};
use crate::decoder::OutBatch;
use crate::ExportError;

/// Sends each batch to a [`crate::BatchStream`] or
/// [`crate::DeviceBatchStream`].
pub(crate) struct ChannelSink<B> {
    pub tx: Sender<B>,
}

impl<B: OutBatch> BatchSink<B> for ChannelSink<B> {
    type Kept = ();

    fn write(&self, batch: B, _: u32, _: BatchOrigin) -> Result<(), ExportError> {
        // The consumer dropped the stream: the export stops.
        self.tx.send(batch).map_err(|_| ExportError::Cancelled)
    }

    fn finish(self, _: &mut PageMap) -> Result<SinkEnd<()>, ExportError> {
        Ok(SinkEnd::nothing())
    }
}
