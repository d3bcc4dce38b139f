package ringmq;
class Placeholder {}
