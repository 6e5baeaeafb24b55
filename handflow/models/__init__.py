"""Neural network modules (Flax linen) and the pure functions around them.

- resnet: ResNet backbones (10/18/34/50) with a feature pyramid to a chosen output stride;
- flow: a conditional RealNVP over 2D residuals (distrax), context computed once per joint;
- transformer: pre-LN attention blocks and the spatiotemporal point transformer;
- point_cloud: hypotheses -> probabilistic 3D point cloud (triangulation, features, frames);
- ust: UST-Hand's two stages.
"""
