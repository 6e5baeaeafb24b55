"""Methods (UST-Hand, CycleHand, HandMIM) behind one small interface (`base.Method`)."""
